//! What the benches share: populating dom0's xenstore quickly, and undoing
//! a prepare as if libxl had made the backend afresh.
use xenblock::store::client::XsClient;
use xenblock::store::wire::MsgType;
use xenblock::store::{Store, NO_TX};

/// Writes every (path, value), pipelined in chunks.
pub fn write_many(store: &XsClient, kv: &[(String, String)]) {
    for chunk in kv.chunks(20_000) {
        let payloads = chunk
            .iter()
            .map(|(k, v)| {
                let mut p = k.as_bytes().to_vec();
                p.push(0);
                p.extend_from_slice(v.as_bytes());
                p
            })
            .collect();
        for r in store
            .pipeline(MsgType::Write, NO_TX, payloads, "populate")
            .unwrap()
        {
            r.unwrap();
        }
    }
}

/// Undo what a prepare wrote, as if libxl had made the backend afresh.
pub fn unprepare(store: &XsClient, be: &str) {
    for k in [
        "physical-device",
        "physical-device-path",
        "node",
        "diskseq",
        "hotplug-status",
        "hotplug-error",
    ] {
        store.remove(NO_TX, &format!("{be}/{k}")).unwrap();
    }
}
