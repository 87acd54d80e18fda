//! RPCs a download provider does not offer, with messages that say what to use instead.
//! Each is still authenticated by the layer before it gets here.

use tonic::Status;

pub(super) fn list_flights() -> Status {
    Status::unimplemented(
        "ListFlights is not offered: find assets in the catalog, then call GetFlightInfo with [did, agreement id]",
    )
}

pub(super) fn do_put() -> Status {
    Status::unimplemented("DoPut is not offered: consumers cannot upload to a provider")
}

pub(super) fn do_action(kind: &str) -> Status {
    let kind: String = kind.chars().take(64).collect();
    Status::unimplemented(format!("unknown action '{kind}'"))
}

pub(super) fn do_exchange() -> Status {
    Status::unimplemented("DoExchange is not offered by the download service")
}
