//! OpenTelemetry tracing: two workers export their spans over OTLP/HTTP to a small receiver.
//! A message sent through one worker (with the caller's own `traceparent`) to a conversation the
//! other owns must make one trace: the send, the owner's answer, its LLM call (GenAI
//! conventions; the LLM request carries the trace too), the reply's write and the live
//! deliveries, each span the child of the one before, across the two processes — joined
//! through the Kafka records' headers.

use std::time::Duration;

use meshchat_tests::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_runs_from_the_send_through_the_owner_and_its_llm_call_to_the_live_delivery()
-> anyhow::Result<()> {
    let _serial = serial().await;
    let otlp = OtlpReceiver::start().await?;
    let pair = static_pair(
        "tracing",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url.as_str()),
            // export within a moment, not the default 5 s
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await?;
    let w1 = &pair.workers[1];
    // node-0 owns partitions 0–1: sent and watched through node-1
    let conv = conversations_on("traced", 4, 0..2).next().unwrap_or_default();
    let token = auth::admin("harness");
    let watch = connect_sse_from(&w1.url, &conv, Some(&token), None).await?;
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = "00f067aa0ba902b7";
    let resp = http()
        .post(format!("{}/api/chat/send", w1.url))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"conversationId": conv, "userId": "ann", "content": "[tag:traced] hello, traced"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await?;
    let message = body["messageId"].as_str().unwrap_or_default().to_string();
    watch
        .wait("the reply", T, |e| {
            e["type"] == "reply" && e["message"]["inReplyTo"] == message
        })
        .await?;

    let topic = format!("{}chat.messages", pair.prefix);
    let (send_name, process_name) = (format!("send {topic}"), format!("process {topic}"));
    // the spans of the answer and of both deliveries, exported
    let spans = wait_for("the trace's spans", T, || {
        let spans: Vec<ReceivedSpan> = otlp
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        let producers = spans.iter().filter(|s| s.name == send_name).count();
        let consumers = spans.iter().filter(|s| s.name == process_name).count();
        let llm = spans.iter().any(|s| s.kind == "client");
        std::future::ready((producers >= 2 && consumers >= 3 && llm).then_some(spans))
    })
    .await?;
    let one = |what: &str, pred: &dyn Fn(&ReceivedSpan) -> bool| -> anyhow::Result<ReceivedSpan> {
        let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| pred(s)).collect();
        anyhow::ensure!(found.len() == 1, "one {what}, got {found:#?} of {spans:#?}");
        Ok(found[0].clone())
    };

    // node-1: the request, continuing the caller's trace, and the message's write
    let request = one("server span", &|s| {
        s.kind == "server" && s.name == "POST /api/chat/send"
    })?;
    assert_eq!(
        request.parent, caller_span,
        "the caller's traceparent is the request's parent"
    );
    assert_eq!(request.instance, "node-1");
    assert_eq!(request.service, "meshchat-worker");
    assert_eq!(request.attributes["http.response.status_code"], json!(200));
    let sent = one("message write", &|s| {
        s.kind == "producer" && s.parent == request.span_id
    })?;
    assert_eq!(sent.name, send_name);
    assert_eq!(sent.instance, "node-1");
    assert_eq!(sent.attr("messaging.system"), "kafka");
    assert_eq!(sent.attr("messaging.destination.name"), topic);

    // node-0, through the record's headers: the answer, its LLM call and the reply's write
    let answer = one("answer", &|s| {
        s.kind == "consumer" && s.attr("meshchat.step") == "answer"
    })?;
    assert_eq!(answer.parent, sent.span_id);
    assert_eq!(answer.instance, "node-0");
    assert_eq!(answer.name, process_name);
    assert_eq!(
        answer.attributes["messaging.kafka.offset"],
        sent.attributes["messaging.kafka.offset"]
    );
    let llm = one("LLM call", &|s| s.kind == "client")?;
    assert_eq!(llm.parent, answer.span_id);
    assert_eq!(llm.instance, "node-0");
    assert_eq!(llm.attr("gen_ai.operation.name"), "chat");
    assert_eq!(llm.attr("gen_ai.provider.name"), "openai");
    let model = llm.attr("gen_ai.request.model");
    assert_eq!(llm.name, format!("chat {model}"));
    assert_eq!(llm.attr("gen_ai.conversation.id"), conv);
    assert_eq!(llm.attributes["gen_ai.response.finish_reasons"], json!(["stop"]));
    assert!(!llm.attr("gen_ai.response.id").is_empty(), "{llm:?}");
    assert_eq!(llm.attr("server.address"), "127.0.0.1");
    let reply = one("reply write", &|s| {
        s.kind == "producer" && s.parent == answer.span_id
    })?;
    assert_eq!(reply.instance, "node-0");

    // the LLM request carried the trace, naming the LLM call's span
    let stats = pair.llm.stats().await?;
    assert_eq!(
        stats["traceparentByTag"]["traced"],
        json!([format!("00-{trace_id}-{}-01", llm.span_id)]),
        "{stats}"
    );

    // the live deliveries of the message and of the reply continue it
    let delivered = |s: &ReceivedSpan| s.kind == "consumer" && s.attr("meshchat.step") == "live_delivery";
    one("message delivery", &|s| delivered(s) && s.parent == sent.span_id)?;
    one("reply delivery", &|s| delivered(s) && s.parent == reply.span_id)?;

    // on the wire: both records carry their write's context
    let log = read_topic(&pair.bootstrap, &topic).await?;
    let traceparent = |r: &TopicRecord| {
        r.headers
            .iter()
            .find(|(k, _)| k == "traceparent")
            .map(|(_, v)| v.clone())
    };
    let of = |id: &str| log.iter().find(|r| r.value["id"] == id).and_then(traceparent);
    let reply_id = log
        .iter()
        .find(|r| r.value["inReplyTo"] == message)
        .and_then(|r| r.value["id"].as_str())
        .unwrap_or_default()
        .to_string();
    assert_eq!(of(&message), Some(format!("00-{trace_id}-{}-01", sent.span_id)));
    assert_eq!(of(&reply_id), Some(format!("00-{trace_id}-{}-01", reply.span_id)));
    Ok(())
}

#[tokio::test]
async fn a_tracing_setup_the_worker_cannot_honour_is_refused_at_start() -> anyhow::Result<()> {
    let run = |envs: &[(&str, &str)], args: &[&str]| {
        let mut cmd = std::process::Command::new(bin("meshchat-worker"));
        cmd.args(["--auth", "none"]).args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output()
    };
    let grpc = run(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
        &[],
    )?;
    assert_eq!(grpc.status.code(), Some(2));
    let said = String::from_utf8_lossy(&grpc.stderr);
    assert!(
        said.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && said.contains("http/protobuf"),
        "{said}"
    );
    let not_url = run(&[], &["--otlp-endpoint", "collector:4318"])?;
    assert_eq!(not_url.status.code(), Some(2));
    let said = String::from_utf8_lossy(&not_url.stderr);
    assert!(
        said.contains("otlp-endpoint") && said.contains("http://"),
        "{said}"
    );
    Ok(())
}
