//! The demo's upstream: answers every request with a JSON description of what it received,
//! so the effect of the gateway (identity headers, stripped Authorization, rewritten path)
//! is visible in the curl output.

use std::sync::Arc;

use crate::body::RequestBody;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use serde_json::{json, Map, Value};

use crate::body::{full, Body};
use crate::proxy::Connection;
use crate::server::Handler;

/// An echo upstream that names itself in every answer.
pub struct Echo {
    pub name: String,
}

impl Handler for Echo {
    async fn call(self: Arc<Self>, req: Request<RequestBody>, _conn: Connection) -> Response<Body> {
        let mut headers = Map::new();
        for (name, value) in req.headers() {
            let v = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
            headers.insert(name.as_str().to_string(), v);
        }
        let body = json!({
            "upstream": self.name,
            "method": req.method().as_str(),
            "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            "headers": headers,
        });
        let mut r = Response::new(full(format!("{body:#}\n")));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}
