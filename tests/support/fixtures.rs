//! Services the tests host, declared once.

use pycom_client::service::Request;
use pycom_client::Fault;
use serde::{Deserialize, Serialize};

/// The result of `calc.add`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Total {
    pub total: i64,
}

pycom_client::interface! {
    /// Arithmetic, declared once for client and server.
    pub mod calc = "test.calc" {
        /// Add a and b, and c when given.
        fn add(a: i64, b: i64; c: i64) -> Total => [total];
        /// Divide, refusing zero.
        fn divide(a: i64, b: i64) -> i64;
    }
}

/// The `calc` handler.
pub struct Calc;

impl calc::Handler for Calc {
    fn add(&self, _r: &mut Request, a: i64, b: i64, c: Option<i64>) -> Result<Total, Fault> {
        Ok(Total {
            total: a + b + c.unwrap_or(0),
        })
    }

    fn divide(&self, _r: &mut Request, a: i64, b: i64) -> Result<i64, Fault> {
        if b == 0 {
            return Err(Fault::bad_request("divide: b must not be 0"));
        }
        Ok(a / b)
    }
}
