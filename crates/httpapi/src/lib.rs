//! HTTP APIs as API Gateway's HTTP APIs (`apigatewayv2`) define them. This crate holds what
//! does not depend on the wire: route keys and the route table requests are matched against.
//! The protocol crate and the front door build on it.

#![forbid(unsafe_code)]

pub mod registry;
pub mod routes;
