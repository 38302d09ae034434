// Shared body of the swap-v1 and swap-v2 test plugins (included, not a crate).

use weir_sdk::{Plugin, Request, Response, ResponseAction};

#[derive(Default)]
struct Swap {
    seen: u64,
}

#[weir_sdk::plugin]
impl Plugin for Swap {
    type Config = ();
    type Ctx = ();

    fn on_response(&mut self, _: &mut (), _: &Request, resp: &mut Response) -> ResponseAction {
        self.seen += 1;
        let _ = resp.set_header("x-plugin-version", VERSION);
        let _ = resp.set_header("x-plugin-seen", &self.seen.to_string());
        ResponseAction::Pass
    }

    fn status(&self) -> String {
        format!(r#"{{"version":"{VERSION}","seen":{}}}"#, self.seen)
    }

    fn snapshot(&self) -> Vec<u8> {
        self.seen.to_le_bytes().to_vec()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = snapshot.try_into().map_err(|_| "snapshot is not 8 bytes".to_string())?;
        self.seen = u64::from_le_bytes(bytes);
        Ok(())
    }
}
