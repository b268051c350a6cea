//! VM name rules (spec §4.1 step 6, F-LIFE-02): at most 63 bytes, letters, digits, `.`, `-`
//! and `_`, not starting with `.`, `-` or `_`. vm.conf checks the same at parse time; the
//! daemon checks again because names also arrive from vmctl.

use vmconf::validate::{check_vm_name, MAX_NAME_LEN};

use super::error::Failure;

/// EINVAL with vmd's reason if `name` may not name a VM.
pub(crate) fn check_name(name: &str) -> Result<(), Failure> {
    if name.len() > MAX_NAME_LEN {
        return Err(Failure::errno(
            libc::EINVAL,
            format!("invalid VM name: longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    check_vm_name(name)
        .map_err(|reason| Failure::errno(libc::EINVAL, format!("{reason}: {name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(name: &str) -> bool {
        check_name(name).is_err_and(|f| f.errno == libc::EINVAL)
    }

    #[test]
    fn length_limit_is_63_bytes() {
        assert!(check_name(&"a".repeat(63)).is_ok());
        assert!(refused(&"a".repeat(64)));
    }

    #[test]
    fn length_counts_bytes_not_characters() {
        // Non-ASCII is refused anyway, but by the charset rule, not by miscounting.
        assert!(refused("é"));
    }

    #[test]
    fn leading_punctuation_is_refused() {
        assert!(refused("-vm"));
        assert!(refused(".vm"));
        assert!(refused("_vm"));
        assert!(check_name("v-m._1").is_ok());
    }

    #[test]
    fn charset() {
        assert!(refused("a b"));
        assert!(refused("a/b"));
        assert!(refused("a:b"));
        assert!(refused(""));
    }

    #[test]
    fn digits_only_name_is_accepted() {
        // vmd accepts it (vmctl then can only address it by id); vm.conf's parser agrees.
        assert!(check_name("1234").is_ok());
    }
}
