/* Shared AVX512 helper of the native kernels: 4 consecutive k-rows of 64 int8 columns -> VNNI quads.
 *
 * Input r0..r3: bytes [col] of k-rows k, k+1, k+2, k+3 for 64 consecutive columns.
 * Output o[L] (L = 0..3): columns 16L .. 16L+15, one int32 lane per column holding its 4 k-entries
 * (k in the low byte), the operand layout of vpdpbusd. Include it inside an AVX512BW target region.
 */
#ifndef POUW_VNNI_PACK_H
#define POUW_VNNI_PACK_H

static inline void pouw_vnni_quads(__m512i r0, __m512i r1, __m512i r2, __m512i r3, __m512i o[4]) {
    const __m512i t0 = _mm512_unpacklo_epi8(r0, r1), t1 = _mm512_unpackhi_epi8(r0, r1);
    const __m512i t2 = _mm512_unpacklo_epi8(r2, r3), t3 = _mm512_unpackhi_epi8(r2, r3);
    /* 128-bit lane L of u_i: columns 16L + 4i .. 16L + 4i + 3, 4 k entries each */
    const __m512i u0 = _mm512_unpacklo_epi16(t0, t2), u1 = _mm512_unpackhi_epi16(t0, t2);
    const __m512i u2 = _mm512_unpacklo_epi16(t1, t3), u3 = _mm512_unpackhi_epi16(t1, t3);
    const __m512i v0 = _mm512_shuffle_i64x2(u0, u1, 0x44), v1 = _mm512_shuffle_i64x2(u0, u1, 0xEE);
    const __m512i v2 = _mm512_shuffle_i64x2(u2, u3, 0x44), v3 = _mm512_shuffle_i64x2(u2, u3, 0xEE);
    o[0] = _mm512_shuffle_i64x2(v0, v2, 0x88);
    o[1] = _mm512_shuffle_i64x2(v0, v2, 0xDD);
    o[2] = _mm512_shuffle_i64x2(v1, v3, 0x88);
    o[3] = _mm512_shuffle_i64x2(v1, v3, 0xDD);
}

#endif
