//! The words of `wasmlock:lock@0.3.0` are those of 0.2.0: their generated
//! types convert case by case, so the engine speaks one vocabulary.

use super::bindings::wasmlock::lock::types;
use crate::wasm::bindings::wasmlock::lock::types as p2;

/// `From` both ways between two enums with the same unit cases.
macro_rules! same_cases {
    ($a:path, $b:path: $($case:ident),+) => {
        const _: () = {
            use $a as A;
            use $b as B;
            impl From<A> for B {
                fn from(x: A) -> B {
                    match x { $(A::$case => B::$case),+ }
                }
            }
            impl From<B> for A {
                fn from(x: B) -> A {
                    match x { $(B::$case => A::$case),+ }
                }
            }
        };
    };
}

same_cases!(p2::Mode, types::Mode: Exclusive, Shared);
same_cases!(p2::Kind, types::Kind: Os, Soft);
same_cases!(p2::HolderKind, types::HolderKind: ThisGuest, ThisHost, Elsewhere);
same_cases!(p2::HoldStatus, types::HoldStatus: Held, Lost);

impl From<p2::ErrorCode> for types::ErrorCode {
    fn from(code: p2::ErrorCode) -> types::ErrorCode {
        use types::ErrorCode as C;
        match code {
            p2::ErrorCode::WouldBlock => C::WouldBlock,
            p2::ErrorCode::Timeout => C::Timeout,
            p2::ErrorCode::Deadlock => C::Deadlock,
            p2::ErrorCode::ReadOnly => C::ReadOnly,
            p2::ErrorCode::NotPermitted => C::NotPermitted,
            p2::ErrorCode::Access => C::Access,
            p2::ErrorCode::InvalidPath => C::InvalidPath,
            p2::ErrorCode::Quota => C::Quota,
            p2::ErrorCode::Unsupported => C::Unsupported,
            p2::ErrorCode::Lost => C::Lost,
            p2::ErrorCode::Unavailable => C::Unavailable,
            p2::ErrorCode::Other(detail) => C::Other(detail),
        }
    }
}
