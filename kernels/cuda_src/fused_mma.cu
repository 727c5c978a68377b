// Fused mining GEMM on NVIDIA tensor cores via mma.sync (sm_80 and later): C' = A'B' exactly (int8 in, int32
// out), the transcript of docs/protocol.md section 4 folded in registers at every chunk of r columns of k, and
// optionally the recovery C = C' - sum_i 128^i U_i V_i as the epilogue (C' then never reaches memory).
// Index maps and fold steps live in mma_fold.h (the loader inlines it here; emulate.cpp runs the same code on
// the host). Compiled at first use through NVRTC (kernels/cuda_mma.py) and offline by nvcc in the tests.
//
// Overlap of fold and MMA. The fold of chunk c has two parts: an in-thread XOR of the accumulators per tile
// (needs chunk c's last MMAs; 7 XORs per 16x16 tile and thread) and a cross-lane butterfly with the message
// update (shuffles and ALU work on T values, independent of the accumulators). The second part is deferred into
// the first k step of chunk c + 1 and issued after that step's MMAs, so it runs while the tensor core works;
// with two or more warps per SM sub-partition, one warp's fold also overlaps the other warps' MMAs.
//
// Operands: A (M x K) row-major, B passed as B^T (N x K) row-major, U (M x digits*CW) and V^T (N x digits*CW)
// row-major, all K-contiguous, 16-byte aligned rows (K, CW multiples of 32). Rows past M / N load as zeros
// (cp.async zero-fill) and stores past M / N are masked. Requires: K a multiple of R, R of 32; M a multiple of
// TH and N of TW (whole tiles), TH | WM, TW | WN, TH >= 16, TW >= 8, 2 <= T = (WM/TH)(WN/TW) <= 32.
#include "mma_fold.h"

namespace pouw {

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// four 8x8 b16 matrices from shared memory (mma_fold.h: a_ldsm_offset, b_ldsm_offset)
__device__ __forceinline__ void ldsm_x4(unsigned* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// D = A B + D for one m16n8k32 tile (int8 operands, int32 accumulate, wrapping)
__device__ __forceinline__ void mma_s8(int* d, const unsigned* a, const unsigned* b) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <int BM, int BN, int WM, int WN, int STAGES, int TH, int TW>
struct Cfg {
  static constexpr int BM_ = BM, BN_ = BN, WN_ = WN, TH_ = TH, TW_ = TW, STAGES_ = STAGES;
  static constexpr int WARPS_N = BN / WN;
  static constexpr int NT = (BM / WM) * WARPS_N * 32;
  static constexpr int MI = WM / 16, NI = WN / 8;
  static constexpr int T = (WM / TH) * (WN / TW);
  static constexpr int W = words_per_lane<T>();
  static constexpr int STAGE_A = BM * LDS, STAGE_B = BN * LDS, STAGE = STAGE_A + STAGE_B;
  static_assert(WM % TH == 0 && WN % TW == 0 && TH % 16 == 0 && TW % 8 == 0, "tile must fit the warp tile");
  static_assert(T >= 2 && T <= 32 && (T & (T - 1)) == 0, "2 <= tiles per warp <= 32, a power of two");
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 16 == 0, "warp tiling (B loads 2 mma tiles)");
};

// copy one k step (32 columns) of the block's A rows and B^T rows into stage buffer `st`
template <class G>
__device__ __forceinline__ void load_stage(signed char* st, const signed char* a, long long lda, int rows_a,
                                           const signed char* b, long long ldb, int rows_b, int kb, int tid,
                                           int bm, int bn) {
  for (int i = tid; i < 2 * bm; i += G::NT) {
    const int r = piece_row(i);
    const bool ok = r < rows_a;
    cp_async16(st + smem_offset(r, piece_byte(i)), ok ? a + r * lda + kb + piece_byte(i) : a, ok);
  }
  for (int i = tid; i < 2 * bn; i += G::NT) {
    const int r = piece_row(i);
    const bool ok = r < rows_b;
    cp_async16(st + G::STAGE_A + smem_offset(r, piece_byte(i)), ok ? b + r * ldb + kb + piece_byte(i) : b, ok);
  }
}

// acc += a[:, k0 : k0 + 32*steps] b^T[:, ...]^T for this warp's sub-block; with FOLD, the transcript of every
// chunk (chunk_steps k steps) goes into msg, chunks counted from 0 at k0.
template <class G, bool FOLD>
__device__ __forceinline__ void gemm_range(int (&acc)[G::MI][G::NI][4], unsigned (&msg)[G::W],
                                           signed char* smem, const signed char* a, long long lda, int rows_a,
                                           const signed char* b, long long ldb, int rows_b, int steps,
                                           int chunk_steps, int tid, int lane, int wrow, int wcol) {
  constexpr int STAGES = G::STAGES_, BM = G::BM_, BN = G::BN_;
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < steps) load_stage<G>(smem + s * G::STAGE, a, lda, rows_a, b, ldb, rows_b, s * KSTEP, tid, BM, BN);
    cp_async_commit();
  }
  unsigned t[G::T];
  bool pending = false;
  int chunk = 0, in_chunk = 0;
  for (int step = 0; step < steps; ++step) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    const int pf = step + STAGES - 1;
    if (pf < steps)
      load_stage<G>(smem + (pf % STAGES) * G::STAGE, a, lda, rows_a, b, ldb, rows_b, pf * KSTEP, tid, BM, BN);
    cp_async_commit();
    const signed char* sa = smem + (step % STAGES) * G::STAGE;
    const signed char* sb = sa + G::STAGE_A;
    unsigned af[G::MI][4], bf[G::NI][2];
#pragma unroll
    for (int mi = 0; mi < G::MI; ++mi) ldsm_x4(af[mi], sa + a_ldsm_offset(lane, wrow + 16 * mi));
#pragma unroll
    for (int ni = 0; ni < G::NI; ni += 2) ldsm_x4(&bf[ni][0], sb + b_ldsm_offset(lane, wcol + 8 * ni));
#pragma unroll
    for (int mi = 0; mi < G::MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < G::NI; ++ni) mma_s8(acc[mi][ni], af[mi], bf[ni]);
    if (FOLD) {
      if (pending) {  // previous chunk's cross-lane fold, issued behind this step's MMAs
        msg_update<G::T>(msg, lane, chunk - 1, LaneFold<G::T, 0>::run(t, lane));
        pending = false;
      }
      if (++in_chunk == chunk_steps) {  // chunk boundary: in-thread XOR of S_chunk per tile
#pragma unroll
        for (int i = 0; i < G::T; ++i) t[i] = 0;
#pragma unroll
        for (int mi = 0; mi < G::MI; ++mi)
#pragma unroll
          for (int ni = 0; ni < G::NI; ++ni)
#pragma unroll
            for (int j = 0; j < 4; ++j) t[tile_of_mma<G::WN_, G::TH_, G::TW_>(mi, ni)] ^= static_cast<unsigned>(acc[mi][ni][j]);
        in_chunk = 0;
        ++chunk;
        pending = true;
      }
    }
  }
  if (FOLD && pending) msg_update<G::T>(msg, lane, chunk - 1, LaneFold<G::T, 0>::run(t, lane));
  cp_async_wait<0>();
  __syncthreads();  // the shared buffers are free for the next range
}

// corr = sum_i 128^i U_i V_i (Horner, mod 2^32) for this warp's sub-block; corr's previous contents are discarded
template <class G>
__device__ __forceinline__ void correction(int (&corr)[G::MI][G::NI][4], unsigned (&msg)[G::W], signed char* smem,
                                           const signed char* u, const signed char* vt, int rows_u, int rows_v,
                                           int digits, int CW, int tid, int lane, int wrow, int wcol) {
#pragma unroll
  for (int mi = 0; mi < G::MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < G::NI; ++ni)
#pragma unroll
      for (int j = 0; j < 4; ++j) corr[mi][ni][j] = 0;
  const long long ldu = (long long)digits * CW;
  for (int i = digits - 1; i >= 0; --i) {
#pragma unroll
    for (int mi = 0; mi < G::MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < G::NI; ++ni)
#pragma unroll
        for (int j = 0; j < 4; ++j) corr[mi][ni][j] = static_cast<int>(static_cast<unsigned>(corr[mi][ni][j]) << 7);
    gemm_range<G, false>(corr, msg, smem, u + i * CW, ldu, rows_u, vt + i * CW, ldu, rows_v, CW / KSTEP, 1, tid,
                         lane, wrow, wcol);
  }
}

// C[rows, cols of this warp's accumulators] = acc, or with SUB, C -= acc (read-modify-write of what this
// thread stored); regs 2h, 2h + 1 are one row, two adjacent columns (N is a multiple of 8: int2 stores)
template <class G, bool SUB>
__device__ __forceinline__ void store_c(const int (&acc)[G::MI][G::NI][4], int* c, int M, int N, int row0,
                                        int col0, int lane) {
#pragma unroll
  for (int mi = 0; mi < G::MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < G::NI; ++ni)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = row0 + 16 * mi + c_row(lane, 2 * h), col = col0 + 8 * ni + c_col(lane, 2 * h);
        if (row < M && col < N) {
          int2* p = reinterpret_cast<int2*>(c + (long long)row * N + col);
          int2 v = make_int2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
          if (SUB) {
            const int2 old = *p;
            v = make_int2(static_cast<int>(static_cast<unsigned>(old.x) - static_cast<unsigned>(v.x)),
                          static_cast<int>(static_cast<unsigned>(old.y) - static_cast<unsigned>(v.y)));
          }
          *p = v;
        }
      }
}

}  // namespace pouw

// One BM x BN block of C (C' without a correction) and, with TRANSCRIPT, its tiles' messages
// (int32 words of a (M/TH, N/TW, 16) tensor). Block order: block_of (mma_fold.h).
// RECOVER: 0 none (C = C'); 1 C = C' - correction in a second accumulator (C' never stored); 2 C' stored, then the
// correction computed in the same registers and subtracted from C in place (half the accumulator registers, one
// more pass over the block of C, which the same threads just wrote).
template <int BM, int BN, int WM, int WN, int STAGES, int TH, int TW, bool TRANSCRIPT, int RECOVER>
__global__ void __launch_bounds__(pouw::Cfg<BM, BN, WM, WN, STAGES, TH, TW>::NT)
    pouw_fused_mma(const signed char* __restrict__ a, const signed char* __restrict__ bt, int* __restrict__ c,
                   int* __restrict__ msgs, const signed char* __restrict__ u, const signed char* __restrict__ vt,
                   int M, int N, int K, int R, int digits, int CW) {
  using namespace pouw;
  using G = Cfg<BM, BN, WM, WN, STAGES, TH, TW>;
  extern __shared__ __align__(16) signed char smem[];
  int pid_m, pid_n;
  block_of(blockIdx.x, (M + BM - 1) / BM, (N + BN - 1) / BN, pid_m, pid_n);
  const int m0 = pid_m * BM, n0 = pid_n * BN;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wrow = (warp / G::WARPS_N) * WM, wcol = (warp % G::WARPS_N) * WN;

  int acc[G::MI][G::NI][4];
#pragma unroll
  for (int mi = 0; mi < G::MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < G::NI; ++ni)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[mi][ni][j] = 0;
  unsigned msg[G::W];
#pragma unroll
  for (int w = 0; w < G::W; ++w) msg[w] = 0;

  gemm_range<G, TRANSCRIPT>(acc, msg, smem, a + (long long)m0 * K, K, M - m0, bt + (long long)n0 * K, K, N - n0,
                            K / KSTEP, R / KSTEP, tid, lane, wrow, wcol);
  if (TRANSCRIPT) {
    const int tw = owner_tile<G::T>(lane), tiles_n = N / TW;
    const int ti = (m0 + wrow) / TH + tw / (WN / TW), tj = (n0 + wcol) / TW + tw % (WN / TW);
    if (ti < M / TH && tj < tiles_n) {
      int* out = msgs + ((long long)ti * tiles_n + tj) * WORDS + owner_sub<G::T>(lane) * G::W;
#pragma unroll
      for (int w = 0; w < G::W; ++w) out[w] = static_cast<int>(msg[w]);
    }
  }
  const long long ldu = (long long)digits * CW;
  if (RECOVER == 1) {
    int corr[G::MI][G::NI][4];
    correction<G>(corr, msg, smem, u + m0 * ldu, vt + n0 * ldu, M - m0, N - n0, digits, CW, tid, lane, wrow, wcol);
#pragma unroll
    for (int mi = 0; mi < G::MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < G::NI; ++ni)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          acc[mi][ni][j] = static_cast<int>(static_cast<unsigned>(acc[mi][ni][j]) - static_cast<unsigned>(corr[mi][ni][j]));
  }
  store_c<G, false>(acc, c, M, N, m0 + wrow, n0 + wcol, lane);
  if (RECOVER == 2) {
    correction<G>(acc, msg, smem, u + m0 * ldu, vt + n0 * ldu, M - m0, N - n0, digits, CW, tid, lane, wrow, wcol);
    store_c<G, true>(acc, c, M, N, m0 + wrow, n0 + wcol, lane);
  }
}
