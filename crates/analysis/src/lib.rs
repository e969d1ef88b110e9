//! cnnu's analysis side: reading recorded activations and the seed's filter → reduce →
//! cluster → purity pipeline. (Being built under issue 4; nothing public yet.)
