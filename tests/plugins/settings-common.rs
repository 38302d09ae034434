// Shared body of the settings-v1 and settings-v2 test plugins (included,
// not a crate): each defines `VERSION` and its `Settings`.

use weir_sdk::{Plugin, Request, Response, ResponseAction};

#[derive(Default)]
struct Versioned {
    greeting: String,
    tag: String,
}

#[weir_sdk::plugin]
impl Plugin for Versioned {
    type Config = Settings;
    type Ctx = ();

    fn configure(&mut self, settings: Settings) -> Result<(), String> {
        self.tag = settings.tag().to_owned();
        self.greeting = settings.greeting;
        Ok(())
    }

    fn on_response(&mut self, _: &mut (), _: &Request, resp: &mut Response) -> ResponseAction {
        let _ = resp.set_header("x-settings-version", VERSION);
        let _ = resp.set_header("x-greeting", &self.greeting);
        if !self.tag.is_empty() {
            let _ = resp.set_header("x-tag", &self.tag);
        }
        ResponseAction::Pass
    }
}
