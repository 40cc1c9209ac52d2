//! The routes of a process's HTTP server: Prometheus metrics, the JSON API, the dashboard.
//!
//! ```text
//!   GET /                         dashboard (HTML + /dashboard.js, embedded in the binary)
//!   GET /metrics                  Prometheus text format
//!   GET /healthz                  "ok"
//!   GET /api/status               this process: stages, counters, rates, lag, checkpoint, models, load
//!   GET /api/cluster              every process's /api/status (what `weatherflow status --json` prints)
//!   GET /api/stations             station list with the newest prediction and rolling skill     ┐
//!   GET /api/stations/{id}        newest prediction, the forecast of 24 h before, actuals, metrics │ monitoring
//!   GET /api/predictions/latest   newest prediction of every station                             │ stage
//!   GET /api/anomalies?limit=N    newest flagged predictions (N <= 200, default 50)              │ (503 without it)
//!   GET /api/model-metrics        rolling verification: all stations, per station, skill alerts ┘
//! ```

use std::time::Duration;

use super::http::{Request, Response};
use super::view::ANOMALIES_KEPT;
use super::{prometheus, status, OpsShared};

/// The dashboard page.
pub const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");
/// The dashboard script.
pub const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");

/// Answers one request.
pub fn handle(ops: &OpsShared, req: &Request) -> Response {
    let path = req.path.trim_end_matches('/');
    match path {
        "" | "/index.html" => Response::ok("text/html; charset=utf-8", DASHBOARD_HTML),
        "/dashboard.js" => Response::ok("text/javascript; charset=utf-8", DASHBOARD_JS),
        "/healthz" => Response::ok("text/plain; charset=utf-8", "ok\n"),
        "/metrics" => Response::ok(prometheus::CONTENT_TYPE, ops.render_metrics()),
        "/api/status" => Response::json(&ops.status()),
        "/api/cluster" => Response::json(&status::gather(ops.settings(), Duration::from_secs(2))),
        _ if path.starts_with("/api/") => monitoring_route(ops, path, req),
        _ => Response::error(404, "no such page; try /, /metrics or /api/status"),
    }
}

fn monitoring_route(ops: &OpsShared, path: &str, req: &Request) -> Response {
    if !ops.monitoring_runs() {
        return Response::error(
            503,
            "the monitoring stage does not run in this cluster; add \"monitoring\" to [pipeline] stages to serve predictions, anomalies and model metrics",
        );
    }
    let view = ops.view();
    match path {
        "/api/stations" => Response::json(&view.stations()),
        "/api/predictions/latest" => Response::json(&view.latest_predictions()),
        "/api/anomalies" => {
            let limit = match req.query.get("limit").map(|l| l.parse::<usize>()) {
                None => 50,
                Some(Ok(n)) if n <= ANOMALIES_KEPT => n,
                Some(_) => return Response::error(400, &format!("limit must be a number from 0 to {ANOMALIES_KEPT}")),
            };
            Response::json(&view.anomalies(limit))
        }
        "/api/model-metrics" => Response::json(&serde_json::json!({
            "overall": view.overall(),
            "stations": view.station_metrics(),
            "alerts": view.alerts(),
        })),
        _ => match path.strip_prefix("/api/stations/") {
            Some(id) => match view.station(id) {
                Some(s) => Response::json(&serde_json::json!({
                    "station_id": id,
                    "latest": s.snapshot.as_ref().and_then(|x| x.latest.as_ref()),
                    "earlier": s.snapshot.as_ref().and_then(|x| x.earlier.as_ref()),
                    "actuals": s.snapshot.as_ref().map(|x| &x.actuals),
                    "metrics": s.metrics,
                    "alert": s.alert,
                })),
                None => Response::error(404, &format!("no station {id:?} (yet)")),
            },
            None => Response::error(404, "no such API route"),
        },
    }
}
