//! Decodes arbitrary bytes as the control protocol's messages, the way vmd reads what any
//! local user sends to its socket: errors are fine, panics are not. Whatever decodes must
//! encode again and decode to the same value, so what vmd forwards is what it accepted.

#![no_main]

use std::fmt::Debug;

use ipc::proto::{Request, Response};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    if let Ok(msg) = ipc::decode::<T>(data) {
        let bytes = ipc::encode(&msg).expect("a decoded message encodes again");
        let again: T = ipc::decode(&bytes).expect("a re-encoded message decodes");
        assert_eq!(again, msg);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Request>(data);
    round_trip::<Response>(data);
});
