//! Appends `<tag>>` to the request's `x-trace` and `<<tag>` to the response's,
//! removes `x-remove-me` from the request and `x-internal` from the response:
//! chained with different tags, the headers show the onion order.
use weir_sdk::{Plugin, Request, RequestAction, Response, ResponseAction};

#[derive(serde::Deserialize)]
struct Config {
    tag: String,
}

#[derive(Default)]
struct Headers {
    tag: String,
}

#[weir_sdk::plugin]
impl Plugin for Headers {
    type Config = Config;
    type Ctx = ();

    fn configure(&mut self, config: Config) -> Result<(), String> {
        self.tag = config.tag;
        Ok(())
    }

    fn on_request(&mut self, _: &mut (), req: &mut Request) -> RequestAction {
        let _ = req.append_header("x-trace", &format!("{}>", self.tag));
        let _ = req.remove_header("x-remove-me");
        RequestAction::Continue
    }

    fn on_response(&mut self, _: &mut (), req: &Request, resp: &mut Response) -> ResponseAction {
        let _ = resp.append_header("x-trace", &format!("<{}", self.tag));
        let _ = resp.remove_header("x-internal");
        // Reading the request in on_response works; writing it does not.
        if let Ok(path) = req.path() {
            let _ = resp.set_header(&format!("x-path-{}", self.tag), &path);
        }
        ResponseAction::Pass
    }
}
