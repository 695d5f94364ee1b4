//! The protobuf codec every generated client and server uses: tonic-prost's, with
//! small initial buffers.
//!
//! Why: a control plane holds one Discovery stream per sidecar, mostly idle, and
//! tonic allocates an 8 KiB encode buffer and an 8 KiB decode buffer per stream up
//! front. ACKs are a few bytes and snapshots go out in parts of ~6 KiB, so 1 KiB to
//! start (buffers still grow to fit any message) saves ~14 KiB per idle stream.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec as TonicCodec};
use tonic_prost::{ProstDecoder, ProstEncoder};

const INITIAL_BUFFER: usize = 1024;
/// tonic's default: how much encoded data is batched before it is handed to HTTP/2.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Encodes `T` and decodes `U` with prost.
#[derive(Debug)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> TonicCodec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
    }
}
