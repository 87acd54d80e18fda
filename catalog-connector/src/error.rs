/// Errors of the catalog. They name the asset concerned and never the storage location.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database error while {action}: {source}")]
    Database {
        action: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("asset {0} is not in this provider's catalog")]
    NotFound(String),
    #[error("asset {0} is already in the catalog")]
    Exists(String),
    #[error("stored metadata of {did} is corrupt: {detail}")]
    Corrupt { did: String, detail: String },
    #[error("invalid metadata: {0}")]
    Invalid(String),
}

pub(crate) fn db(action: &str) -> impl FnOnce(sqlx::Error) -> CatalogError + '_ {
    move |source| CatalogError::Database {
        action: action.to_string(),
        source,
    }
}

/// Result alias for this crate.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
