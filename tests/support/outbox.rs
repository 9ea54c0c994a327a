//! The outbox as `edgegate buffer export` shows it: a reading written as a small row comes back
//! with the payload it was sent with.

use std::path::Path;

#[allow(dead_code)]
pub struct Row {
    pub id: i64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Every row of the outbox file `db`, oldest first; none before the gateway has created it.
pub fn outbox_rows(db: &Path) -> Vec<Row> {
    let dir = db.parent().expect("outbox file in a directory");
    let mut out = Vec::new();
    match edgegate::store::inspect::export(dir, &mut out) {
        Ok(_) => {}
        // The gateway has not created it yet.
        Err(edgegate::store::StoreError::Missing(_)) => return Vec::new(),
        Err(e) => panic!("export the outbox: {e}"),
    }
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("export line is JSON");
            Row {
                id: v["id"].as_i64().expect("id"),
                topic: v["topic"].as_str().expect("topic").to_string(),
                payload: v["payload"]
                    .as_str()
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec(),
            }
        })
        .collect()
}
