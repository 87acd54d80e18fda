//! Flight SQL: consumers with a query agreement run SQL where the data lives, and only
//! results leave.
//!
//! - `scope`: which agreements a token carries;
//! - `session`, `tables`, `objects`: the per-request DataFusion session over the granted
//!   assets, and the storage it may touch;
//! - `guard`: what SQL may do (text and plan checks);
//! - `execute`: planning, parameter binding, limits, cancellation, view-type casting;
//! - `handles`: sealed query tickets and prepared-statement handles;
//! - `metadata`, `session_options`: what drivers ask before querying;
//! - `service`: the `FlightSqlService` implementation.
//!
//! The router in `crate::router` sends SQL commands here and intercepts what
//! `FlightSqlService` cannot route (see its module comment).

mod execute;
mod guard;
mod handles;
mod lineage;
mod metadata;
mod objects;
mod policy;
pub mod scope;
mod service;
pub mod session;
pub(crate) mod session_options;
mod tables;

pub use execute::QueryStats;
pub use lineage::LineageSink;
pub use policy::{ConstrainedPlanner, ConstrainedPlannerBuilder, validate_constraints};
pub(crate) use service::Authorized;
pub(crate) use service::SqlOptions;
pub use service::SqlService;
pub use session::QueryLimits;
