//! The one table of SFS's RPC methods, and everything made from it.
//!
//! A server's request handlers are written once, against SFS types: each
//! service is a trait ([`MetadataHandlers`], [`ChunkControlHandlers`],
//! [`ControlHandlers`]) whose methods take the caller and the prost request
//! and return an [`SfsResult`] — no tonic types, no status codes. The two
//! front ends are adapters generated here from the table below:
//!
//! - gRPC: [`Grpc`] implements the tonic service traits of `sfs.proto` for
//!   any handlers, taking the caller from the request's extensions
//!   ([`crate::caller::caller_of`]) and turning an error into a status
//!   that carries its errno ([`crate::status_from_error`]);
//! - lean: [`Services`] decodes a lean request by method number and calls
//!   the handler ([`crate::lean::Dispatch`]); the errno goes on the wire
//!   as it is.
//!
//! The clients' typed calls ([`crate::lean::LeanClient`], and
//! [`crate::lean::Rpc`], which sends each call over lean or gRPC) come from
//! the same table, so the protocols cannot drift apart. Adding an RPC is
//! its messages and `rpc` line in `sfs.proto`, one line here, and its
//! handler. Method numbers are part of the lean wire format: never reuse
//! one.
//!
//! Streaming calls (`Readdir`, `ListSubtree`) are gRPC only; they have paged
//! unary twins that both protocols carry.

use crate::pb;
use futures::stream::{BoxStream, StreamExt};
use sfs_global::access::Caller;
use sfs_global::{Errno, SfsError, SfsResult};
use std::future::Future;
use std::sync::Arc;

/// The pages of a streaming call, each a result of its own (a listing may
/// fail half-way).
pub type PageStream<P> = BoxStream<'static, SfsResult<P>>;

/// The gRPC front end of a service's handlers: `Grpc<H>` implements the
/// tonic service trait of every handler trait `H` implements.
pub struct Grpc<H>(pub Arc<H>);

/// Whether requests of `method` carry the caller ([`crate::caller`]): the
/// `Metadata` service's (1..=31), whose handlers check permissions, and
/// `SetSource` (40), whose server checks that the caller may read the
/// backing file. Other chunk and control calls act on file ids a
/// permitted open handed out, or concern the whole server, and go without
/// (no bytes, no system calls).
pub const fn carries_caller(method: u16) -> bool {
    method < 32 || method == 40
}

/// Declares the methods once, grouped by service: each group names the
/// `Services` field and type parameter of its handlers, its tonic trait and
/// module, its handler trait, its unary methods with their lean numbers, and
/// its streaming (gRPC-only) methods with tonic's stream type name.
macro_rules! sfs_methods {
    ($(
        $field:ident ($param:ident): $tonic:ident in $module:ident, handled by $handlers:ident {
            $( $code:literal => $method:ident ( $req:ident ) -> $resp:ident ; )*
        } streams {
            $( $smethod:ident ( $sreq:ident ) -> $sitem:ident as $sassoc:ident ; )*
        }
    )*) => {
        /// Every lean method number with its name, in table order (for the
        /// server's per-method metrics).
        pub const METHODS: &[(u16, &str)] = &[$($( ($code, stringify!($method)), )*)*];

        /// The name of a lean method number (for logs and errors).
        pub fn method_name(method: u16) -> Option<&'static str> {
            match method {
                $($( $code => Some(stringify!($method)), )*)*
                _ => None,
            }
        }

        $(
            #[doc = concat!("The handlers of the `", stringify!($tonic), "` service: each takes the \
                caller (`Caller::nobody()` when the request carried none, see [`carries_caller`]) \
                and the request, and answers or fails with an errno.")]
            pub trait $handlers: Send + Sync + 'static {
                $(
                    #[doc = concat!("`", stringify!($tonic), "/", stringify!($method), "`, lean method ", stringify!($code), ".")]
                    fn $method(
                        &self,
                        caller: Caller,
                        request: pb::$req,
                    ) -> impl Future<Output = SfsResult<pb::$resp>> + Send;
                )*
                $(
                    #[doc = concat!("`", stringify!($tonic), "/", stringify!($smethod), "`, streamed (gRPC only).")]
                    fn $smethod(
                        &self,
                        caller: Caller,
                        request: pb::$sreq,
                    ) -> impl Future<Output = SfsResult<PageStream<pb::$sitem>>> + Send;
                )*
            }

            #[tonic::async_trait]
            impl<H: $handlers> pb::$module::$tonic for Grpc<H> {
                $(
                    async fn $method(
                        &self,
                        request: tonic::Request<pb::$req>,
                    ) -> Result<tonic::Response<pb::$resp>, tonic::Status> {
                        let caller = crate::caller::caller_of(&request);
                        self.0
                            .$method(caller, request.into_inner())
                            .await
                            .map(tonic::Response::new)
                            .map_err(|e| crate::status_from_error(&e))
                    }
                )*
                $(
                    type $sassoc = BoxStream<'static, Result<pb::$sitem, tonic::Status>>;

                    async fn $smethod(
                        &self,
                        request: tonic::Request<pb::$sreq>,
                    ) -> Result<tonic::Response<Self::$sassoc>, tonic::Status> {
                        let caller = crate::caller::caller_of(&request);
                        let pages = self
                            .0
                            .$smethod(caller, request.into_inner())
                            .await
                            .map_err(|e| crate::status_from_error(&e))?;
                        Ok(tonic::Response::new(
                            pages
                                .map(|page| page.map_err(|e| crate::status_from_error(&e)))
                                .boxed(),
                        ))
                    }
                )*
            }
        )*

        /// The handlers of a server's services, as the lean RPC calls them.
        pub struct Services<$($param),*> {
            $( pub $field: Arc<$param>, )*
        }

        impl<$($param: $handlers),*> Services<$($param),*> {
            /// Decodes the body of a `method` request, calls its handler and
            /// encodes the answer.
            async fn dispatch(
                &self,
                method: u16,
                caller: Option<Caller>,
                body: bytes::Bytes,
            ) -> SfsResult<Vec<u8>> {
                use prost::Message;
                let caller = caller.unwrap_or_else(Caller::nobody);
                match method {
                    $($( $code => {
                        let request = pb::$req::decode(body).map_err(|e| {
                            SfsError::invalid(format!(
                                "{}: undecodable request: {e}", stringify!($method)
                            ))
                        })?;
                        let answer = self.$field.$method(caller, request).await?;
                        Ok(answer.encode_to_vec())
                    } )*)*
                    other => Err(SfsError::new(
                        Errno::ENOSYS,
                        format!("lean RPC: unknown method {other}"),
                    )),
                }
            }
        }

        impl<$($param: $handlers),*> crate::lean::Dispatch for Services<$($param),*> {
            fn call(
                &self,
                method: u16,
                caller: Option<Caller>,
                body: bytes::Bytes,
            ) -> std::pin::Pin<Box<dyn Future<Output = SfsResult<Vec<u8>>> + Send + '_>> {
                Box::pin(self.dispatch(method, caller, body))
            }
        }

        impl crate::lean::LeanClient {
            $($(
                pub async fn $method(&self, request: pb::$req) -> SfsResult<pb::$resp> {
                    self.call($code, carries_caller($code), &request).await
                }
            )*)*
        }

        impl crate::lean::Rpc {
            $($(
                pub async fn $method(&self, request: pb::$req) -> SfsResult<pb::$resp> {
                    match self {
                        crate::lean::Rpc::Lean(lean) => lean.$method(request).await,
                        crate::lean::Rpc::Grpc(grpc) => grpc
                            .$field
                            .clone()
                            .$method(grpc.request($code, request))
                            .await
                            .map(tonic::Response::into_inner)
                            .map_err(|status| grpc.error(status)),
                    }
                }
            )*)*
        }
    };
}

sfs_methods! {
    metadata (M): Metadata in metadata_server, handled by MetadataHandlers {
        1 => create(CreateRequest) -> CreateResponse;
        2 => stat(PathRequest) -> Entry;
        3 => remove(RemoveRequest) -> Entry;
        4 => grow_size(GrowSizeRequest) -> Empty;
        5 => reserve_append(ReserveAppendRequest) -> ReserveAppendResponse;
        6 => truncate(TruncateRequest) -> Entry;
        7 => set_attr(SetAttrRequest) -> Entry;
        8 => readdir_paged(ReaddirPageRequest) -> ReaddirPage;
        9 => has_children(PathRequest) -> HasChildrenResponse;
        10 => put_entry(PutEntryRequest) -> PutEntryResponse;
        11 => list_subtree_paged(ReaddirPageRequest) -> SubtreePage;
        12 => sync_metadata(Empty) -> Empty;
        13 => share_entry(LinkRequest) -> Entry;
        14 => add_links(LinkRequest) -> Entry;
        15 => set_xattr(SetXattrRequest) -> Entry;
    } streams {
        readdir(ReaddirRequest) -> ReaddirPage as ReaddirStream;
        list_subtree(ReaddirRequest) -> SubtreePage as ListSubtreeStream;
    }
    chunks (C): ChunkControl in chunk_control_server, handled by ChunkControlHandlers {
        32 => remove_chunks(FileRequest) -> Empty;
        33 => truncate_chunks(TruncateChunksRequest) -> Empty;
        34 => sync_chunks(FileRequest) -> Empty;
        35 => write_chunk(WriteChunkRequest) -> Empty;
        36 => read_chunk(ReadChunkRequest) -> ReadChunkResponse;
        37 => flush_chunks(FlushChunksRequest) -> FlushChunksResponse;
        38 => holdings(HoldingsRequest) -> HoldingsResponse;
        39 => write_back_soon(FileRequest) -> Empty;
        40 => set_source(SetSourceRequest) -> Empty;
    } streams {}
    control (K): Control in control_server, handled by ControlHandlers {
        48 => hello(HelloRequest) -> HelloResponse;
        49 => stats(Empty) -> StatsResponse;
        50 => shutdown(Empty) -> Empty;
        51 => checkpoint(CheckpointRequest) -> CheckpointResponse;
        52 => commit_checkpoint(CommitCheckpointRequest) -> Empty;
    } streams {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_a_name_and_a_number_of_its_own() {
        for code in [1, 2, 3, 12, 13, 14, 15, 32, 34, 48, 50] {
            assert!(method_name(code).is_some(), "{code}");
        }
        assert_eq!(method_name(0), None);
        assert_eq!(method_name(16), None);
        let mut codes: Vec<u16> = METHODS.iter().map(|(code, _)| *code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), METHODS.len(), "a number used twice");
    }

    #[test]
    fn metadata_calls_and_set_source_carry_the_caller() {
        for (code, name) in METHODS {
            let expected = *code < 32 || *name == "set_source";
            assert_eq!(carries_caller(*code), expected, "{name}");
        }
    }
}
