//! The one integration-test binary (one binary keeps CI's link time down). Each module is
//! a suite; `attacks/` holds one test per attack of SECURITY.md, so the suite reads as
//! the list of what insitu resists.

mod attacks;
mod bad_input;
mod catalog_postgres;
mod catalog_search;
mod common;
mod compute;
mod conformance;
mod demo;
mod federated;
mod flight_sql;
mod flows;
mod kubernetes;
mod lineage_feast;
mod python_client;
mod refund;
mod restart;
mod tls;
