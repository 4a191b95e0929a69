//! The connection function: API Gateway WebSocket `$connect`, `$disconnect` and `$default`.
//! It translates between frames (`shared::frames`) and the relay service, nothing more.

use std::convert::Infallible;
use std::time::Instant;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use shared::frames::{ClientFrame, ServerFrame};
use shared::services::relay::{GroupSend, Payload, Relay};
use shared::{metrics, Result};
use tracing::Instrument;

fn reply(status: i64, body: Option<String>) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    r.body = body.map(Body::Text);
    r
}

/// `$connect` (token in the query, `ack=1` for ack mode, or `provisioning=1` for an anonymous
/// provisioning socket),
/// `$disconnect`, and `$default` (client frames). The returned body of `$default` is the reply
/// frame, sent back by API Gateway's route response. Every event is counted and timed by action
/// and outcome, and every log line of it carries its request id and connection id.
pub async fn handler(
    relay: &Relay,
    ev: ApiGatewayWebsocketProxyRequest,
) -> Result<ApiGatewayProxyResponse, Infallible> {
    let started = Instant::now();
    let ctx = &ev.request_context;
    // At the error level: enabled whenever any line of the event is, whatever the filter.
    let span = tracing::error_span!(
        "event",
        request_id = ctx.request_id.as_deref().unwrap_or_default(),
        connection_id = ctx.connection_id.as_deref().unwrap_or_default(),
        route = ctx.route_key.as_deref().unwrap_or_default(),
    );
    let handled = event(relay, &ev).instrument(span).await;
    metrics::frame(handled.action, handled.outcome, started.elapsed());
    Ok(handled.response)
}

/// An event's response, with its action and outcome as the metrics label them.
struct Handled {
    /// A client frame's action, `$connect`, `$disconnect`, or `invalid` (the frame did not parse).
    action: &'static str,
    /// `ok`, or the code of the error answered.
    outcome: &'static str,
    response: ApiGatewayProxyResponse,
}

async fn event(relay: &Relay, ev: &ApiGatewayWebsocketProxyRequest) -> Handled {
    let connection_id = ev
        .request_context
        .connection_id
        .as_deref()
        .unwrap_or_default();
    match ev.request_context.route_key.as_deref() {
        Some("$connect") => {
            let ip = ev
                .request_context
                .identity
                .source_ip
                .as_deref()
                .unwrap_or_default();
            let connected = match ev.query_string_parameters.first("provisioning") {
                Some("1") => relay.connect_provisioning(connection_id, ip).await,
                _ => {
                    let ack = matches!(ev.query_string_parameters.first("ack"), Some("1" | "true"));
                    relay
                        .connect(
                            connection_id,
                            ev.query_string_parameters.first("token"),
                            ip,
                            ack,
                        )
                        .await
                        .map(|_| ())
                }
            };
            if connected.is_ok() {
                metrics::connection_opened();
            }
            Handled {
                action: "$connect",
                outcome: outcome(&connected),
                response: connected_reply(connected),
            }
        }
        Some("$disconnect") => {
            metrics::connection_closed();
            let disconnected = relay.disconnect(connection_id).await;
            if let Err(e) = &disconnected {
                e.log();
            }
            Handled {
                action: "$disconnect",
                outcome: outcome(&disconnected),
                response: reply(200, None),
            }
        }
        _ => {
            let text = ev.body.as_deref().unwrap_or_default();
            let (action, answered) = frame(relay, connection_id, text).await;
            let outcome = match &answered {
                Ok(_) => "ok",
                Err(refusal) => refusal.code,
            };
            let response = match answered {
                // The session is over (logout, deletion, token expiry): the refusal is the
                // connection's last frame, written before it is closed.
                Err(refusal) if refusal.code == "unauthorized" => {
                    relay.end(connection_id, &refusal.frame.to_json()).await;
                    reply(200, None)
                }
                Err(refusal) => reply(200, Some(refusal.frame.to_json())),
                Ok(answer) => reply(200, answer.map(|a| a.to_json())),
            };
            Handled {
                action,
                outcome,
                response,
            }
        }
    }
}

fn outcome(result: &Result<()>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(e) => e.code(),
    }
}

/// A frame refused: the error frame answered and its code.
struct Refusal {
    code: &'static str,
    frame: ServerFrame,
}

/// A frame's answer: its reply frame (none for a quiet `ack` that succeeded), or its refusal.
type Answered = std::result::Result<Option<ServerFrame>, Refusal>;

/// One client frame in, with its action: its answer out (pushed frames go through the relay's
/// pusher).
async fn frame(relay: &Relay, connection_id: &str, text: &str) -> (&'static str, Answered) {
    let frame = match ClientFrame::parse(text) {
        Ok(frame) => frame,
        Err((id, e)) => return ("invalid", Err(refused(id, e))),
    };
    let action = frame.action();
    let id = frame.id().cloned();
    let answered = answer(relay, connection_id, frame).await;
    (action, answered.map_err(|e| refused(id, e)))
}

/// What the relay answers a parsed frame.
async fn answer(
    relay: &Relay,
    connection_id: &str,
    frame: ClientFrame,
) -> Result<Option<ServerFrame>> {
    let answer: Result<ServerFrame> = match frame {
        ClientFrame::Send(send) => match (send.group_id, send.to) {
            (Some(group_id), _) => {
                let group_send = GroupSend {
                    group_id,
                    body: send.body.unwrap_or_default(),
                    devices: send.devices.unwrap_or_default(),
                    online_only: send.online_only.unwrap_or(false),
                    expires_in: send.expires_in,
                };
                relay
                    .send_group(
                        connection_id,
                        group_send,
                        send.id.as_ref().and_then(|id| id.as_str()),
                    )
                    .await
                    .map(|sent| ServerFrame::Sent {
                        id: send.id,
                        delivery: sent.delivery,
                        devices: vec![],
                        group_id: Some(sent.group_id),
                        delivered: Some(sent.delivered),
                        queued: Some(sent.queued),
                        dropped: Some(sent.dropped),
                    })
            }
            (None, to) => {
                let payload = match (send.messages, send.body) {
                    (Some(messages), _) => Payload::Devices(messages),
                    (None, body) => Payload::Body(body.unwrap_or_default()),
                };
                relay
                    .send(
                        connection_id,
                        &to.unwrap_or_default(),
                        payload,
                        send.online_only.unwrap_or(false),
                        send.expires_in,
                        send.id.as_ref().and_then(|id| id.as_str()),
                    )
                    .await
                    .map(|sent| ServerFrame::Sent {
                        id: send.id,
                        delivery: sent.delivery,
                        devices: sent.devices,
                        group_id: None,
                        delivered: None,
                        queued: None,
                        dropped: None,
                    })
            }
        },
        ClientFrame::Ack(ack) => match relay.ack(connection_id, &ack.ids).await {
            Ok(_) if ack.quiet => return Ok(None),
            answer => answer.map(|acked| ServerFrame::Acked { id: ack.id, acked }),
        },
        ClientFrame::Provision(_) => {
            relay
                .provision(connection_id)
                .await
                .map(|(address, expires_in)| ServerFrame::ProvisioningAddress {
                    address,
                    expires_in,
                })
        }
        ClientFrame::Fetch(_) => relay
            .fetch(connection_id)
            .await
            .map(|()| ServerFrame::Drained),
        ClientFrame::List(_) => relay
            .list(connection_id)
            .await
            .map(|pending| ServerFrame::Inbox { pending }),
        ClientFrame::Ping(_) => relay.ping(connection_id).await.map(|()| ServerFrame::Pong),
        ClientFrame::Renew(renew) => relay
            .renew(connection_id, &renew.token)
            .await
            .map(|valid_until| ServerFrame::Renewed { valid_until }),
    };
    answer.map(Some)
}

/// `$connect`'s answer: 200, or the refusal as an HTTP error (the handshake fails).
fn connected_reply(connected: Result<()>) -> ApiGatewayProxyResponse {
    match connected {
        Ok(()) => reply(200, None),
        Err(e) => {
            e.log();
            let mut r = reply(e.status() as i64, Some(e.to_json().to_string()));
            if let shared::Error::RateLimited { retry_after_secs } = e {
                r.headers.insert("retry-after", retry_after_secs.into());
            }
            r
        }
    }
}

fn refused(id: Option<serde_json::Value>, e: shared::Error) -> Refusal {
    e.log();
    Refusal {
        code: e.code(),
        frame: ServerFrame::error(id, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_labelled_by_the_code_it_answers() {
        assert_eq!(outcome(&Ok(())), "ok");
        let limited = Err(shared::Error::RateLimited {
            retry_after_secs: 1,
        });
        assert_eq!(outcome(&limited), "rate_limited");
        let refusal = refused(None, shared::Error::InvalidFrame("x".into()));
        assert_eq!(refusal.code, "invalid_frame");
        assert_eq!(refusal.frame.code(), Some("invalid_frame"));
    }
}
