//! Typed config `{ "limit": u32 }`: rejects unknown fields (by serde) and a
//! zero limit (by the plugin), with a message.
use weir_sdk::Plugin;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    limit: u32,
}

#[derive(Default)]
struct Limited {
    limit: u32,
}

#[weir_sdk::plugin]
impl Plugin for Limited {
    type Config = Config;
    type Ctx = ();
    fn configure(&mut self, config: Config) -> Result<(), String> {
        if config.limit == 0 {
            return Err("limit must be positive".into());
        }
        self.limit = config.limit;
        Ok(())
    }
    fn status(&self) -> String {
        format!(r#"{{"limit":{}}}"#, self.limit)
    }
}
