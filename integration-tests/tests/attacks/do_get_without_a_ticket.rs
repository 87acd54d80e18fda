use arrow_flight::Ticket;
use insitu_integration_tests::CONSUMER;
use tonic::Code;

use super::target;
use crate::common::{assert_refused, bearer, fetch, raw_client};

#[tokio::test]
async fn do_get_with_a_made_up_ticket_is_refused() {
    let t = target().await;
    let s = &t.scene;
    let token = s.token(CONSUMER).expect("token");
    let mut client = raw_client(&s.provider.endpoint, Some(&bearer(&token)))
        .await
        .expect("client");
    // A ticket that names the asset in the clear, as a naive server would accept.
    let naive = Ticket::new(format!("{}/{}", s.free, t.agreement));
    assert_refused(
        fetch(&mut client, naive).await,
        Code::PermissionDenied,
        "malformed ticket",
    );
    assert_refused(
        fetch(&mut client, Ticket::new(Vec::<u8>::new())).await,
        Code::PermissionDenied,
        "malformed ticket",
    );
    t.assert_no_fulfil().await;
}
