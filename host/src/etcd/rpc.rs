//! etcd's gRPC API as generated from `proto/etcd.proto`, and the few request
//! shapes the lock protocol builds from it.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("etcdserverpb");

use compare::{CompareResult, CompareTarget, TargetUnion};
use range_request::{SortOrder, SortTarget};
use request_op::Request;

/// The end of the range of every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the key space.
    vec![0]
}

/// The keys under `prefix` by create revision, lowest (`Ascend`) or highest
/// first, among those created at or before `max_create` (0: all). All of
/// them: those of locks whose names nest inside this one's are skipped by
/// the caller.
pub(crate) fn by_create(prefix: &[u8], order: SortOrder, max_create: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision: max_create,
        ..Default::default()
    }
}

/// One key.
pub(crate) fn get(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

/// `key`'s create revision equals `revision` (0: the key does not exist).
pub(crate) fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        range_end: Vec::new(),
    }
}

pub(crate) fn range_op(r: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(r)),
    }
}

pub(crate) fn put_op(key: &[u8], value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

pub(crate) fn delete_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

impl TxnResponse {
    /// The keys found by the `Range` at `index` of the branch that ran.
    pub(crate) fn range(&self, index: usize) -> &[KeyValue] {
        match self.responses.get(index).and_then(|r| r.response.as_ref()) {
            Some(response_op::Response::ResponseRange(r)) => &r.kvs,
            _ => &[],
        }
    }

    /// The store revision the transaction ran at (its own, if it wrote).
    pub(crate) fn revision(&self) -> i64 {
        self.header.as_ref().map_or(0, |h| h.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_where_its_last_byte_below_0xff_goes_up() {
        assert_eq!(prefix_end(b"jobs/"), b"jobs0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
