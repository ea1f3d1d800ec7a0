//! Fuzzes the credential file parser (`wepoq connect --credential FILE`): any text gives a
//! credential or an error naming a line, never a panic; a parsed credential renders to a
//! text that parses to the same credential.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wepoq_reconciler::tunnel::credential::Credential;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(credential) = Credential::parse(text) {
        let again = Credential::parse(&credential.render()).expect("a rendered credential parses");
        assert_eq!(again.render(), credential.render());
    }
});
