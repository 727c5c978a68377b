// Index maps and fold steps of the mma.sync mining kernel (fused_mma.cu), shared with its host emulator
// (emulate.cpp, compiled with g++), so the emulator runs exactly the addressing and fold code the GPU runs.
//
// Geometry. A block of NT = WARPS_M * WARPS_N warps owns a BM x BN block of C'; warp (wm, wn) owns the
// WM x WN sub-block at rows wm*WM, columns wn*WN, as MI x NI mma.sync tiles (MI = WM/16, NI = WN/8) of shape
// m16n8k32 (int8 in, int32 accumulate). One k step is 32 columns of k; a chunk of the transcript is r/32 steps.
// Shared memory holds STAGES copies of the A tile (BM x 32 bytes) and the B^T tile (BN x 32 bytes), rows padded
// to LDS = 48 bytes, so the fragment loads of a warp hit 32 distinct banks.
//
// PTX ISA layouts of mma.m16n8k32 .s8 (g = lane >> 2, q = lane & 3):
//   A (16 x 32, row-major): reg j in 0..3 holds 4 bytes of row g + 8*(j & 1), columns 4q + 16*(j >> 1) + 0..3
//   B (32 x 8, "col"):      reg j in 0..1 holds 4 bytes of column g, rows 4q + 16*j + 0..3
//   C (16 x 8):             reg j in 0..3 is row g + 8*(j >> 1), column 2q + (j & 1)
//
// Fold. Every protocol tile (TH x TW, TH a multiple of 16, TW of 8, inside one warp's sub-block) is a union of
// mma tiles, and every mma tile spreads over all 32 lanes, so a tile's XOR is (1) an in-thread XOR of the lane's
// accumulators in that tile, giving t[T] (T = tiles per warp), then (2) an XOR over the 32 lanes. (2) is a
// butterfly that halves the values each stage: at stage s (lane mask 16 >> s) a lane keeps the half of its
// values selected by its lane bit (4 - s) and sends the other half to its partner; after log2 T stages each lane
// holds one value, for tile lane >> (5 - log2 T), and the remaining stages are plain XOR shuffles. Each tile's
// 16 message words are then split over the 32/T lanes that hold its XOR: lane sub = lane & (32/T - 1) owns
// words sub*W .. sub*W + W - 1, W = T/2 (so 2 <= T <= 32). XOR being associative and commutative, any order
// gives the bits of kernels/reference.py; these functions fix the order the kernel uses.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define POUW_HD __host__ __device__ __forceinline__
#else
#define POUW_HD inline
#endif

namespace pouw {

constexpr int KSTEP = 32;   // k columns per mma.sync (m16n8k32) and per pipeline stage
constexpr int LDS = 48;     // bytes per shared-memory row of a stage (32 data + 16 padding)
constexpr int WORDS = 16;   // message words per tile
constexpr int ROT = 13;     // message rotation

POUW_HD constexpr int ilog2(int v) { return v <= 1 ? 0 : 1 + ilog2(v >> 1); }

POUW_HD unsigned rotl13(unsigned x) { return (x << ROT) | (x >> (32 - ROT)); }

// ---- block order: program pid -> (block row, block column), grouped GROUP_M block rows at a time (as Triton's
// kernel) so that neighbouring programs share rows of A in L2; a bijection of [0, grid_m * grid_n)
constexpr int GROUP_M = 8;
POUW_HD void block_of(int pid, int grid_m, int grid_n, int& pid_m, int& pid_n) {
  const int width = GROUP_M * grid_n, first_m = (pid / width) * GROUP_M;
  const int group = grid_m - first_m < GROUP_M ? grid_m - first_m : GROUP_M;
  pid_m = first_m + (pid % width) % group;
  pid_n = (pid % width) / group;
}

// ---- global -> shared copies: 16-byte pieces, piece i of a tile with `rows` rows is row i >> 1, byte 16*(i & 1)
POUW_HD int piece_row(int i) { return i >> 1; }
POUW_HD int piece_byte(int i) { return (i & 1) * 16; }
POUW_HD int smem_offset(int row, int byte) { return row * LDS + byte; }

// ---- fragment loads: ldmatrix.sync.aligned.m8n8.x4.shared.b16 reads four 8 x 8 b16 matrices (8 rows of 16 bytes
// each); lane l gives the address of row (l & 7) of matrix (l >> 3) and receives in register i the 4 bytes
// 4*(l & 3) .. +3 of row l >> 2 of matrix i.
// A, mma tile rows row0 ..: matrix i = rows row0 + 8*(i & 1) + 0..7, bytes 16*(i >> 1) .., so register i is
// A fragment register i (row g + 8*(i & 1), bytes 4q + 16*(i >> 1)).
POUW_HD int a_ldsm_offset(int lane, int row0) {
  const int i = lane >> 3;
  return smem_offset(row0 + 8 * (i & 1) + (lane & 7), 16 * (i >> 1));
}
// B^T, mma tiles ni and ni + 1 (B^T rows col0 .. col0 + 15): matrix i = rows col0 + 8*(i >> 1) + 0..7, bytes
// 16*(i & 1) .., so registers 0, 1 are tile ni's B fragment (column g, bytes 4q + 16j) and 2, 3 tile ni + 1's.
POUW_HD int b_ldsm_offset(int lane, int col0) {
  const int i = lane >> 3;
  return smem_offset(col0 + 8 * (i >> 1) + (lane & 7), 16 * (i & 1));
}
// accumulator reg j of an mma tile: row and column inside the 16 x 8 tile
POUW_HD int c_row(int lane, int j) { return (lane >> 2) + 8 * (j >> 1); }
POUW_HD int c_col(int lane, int j) { return 2 * (lane & 3) + (j & 1); }

// ---- the fold
// warp-local tile of mma tile (mi, ni): tiles row-major inside the warp's WM x WN sub-block
template <int WN, int TH, int TW>
POUW_HD int tile_of_mma(int mi, int ni) { return ((16 * mi) / TH) * (WN / TW) + (8 * ni) / TW; }

// stage s of the butterfly over n values (n even): what this lane keeps and what it sends to lane ^ (16 >> s)
template <int N>
POUW_HD void fold_split(int lane, int s, const unsigned* v, unsigned* keep, unsigned* send) {
  const int hi = (lane >> (4 - s)) & 1;
  constexpr int half = N / 2;
#pragma unroll
  for (int i = 0; i < half; ++i) {
    keep[i] = hi ? v[half + i] : v[i];
    send[i] = hi ? v[i] : v[half + i];
  }
}
POUW_HD int fold_mask(int s) { return 16 >> s; }

// after the butterfly (T tiles per warp): the warp-local tile whose XOR this lane holds, and which words it owns
template <int T> POUW_HD int owner_tile(int lane) { return lane >> (5 - ilog2(T)); }
template <int T> POUW_HD int owner_sub(int lane) { return lane & ((32 / T) - 1); }
template <int T> POUW_HD constexpr int words_per_lane() { return T / 2; }

// msg[c % 16] = rotl13(msg[c % 16]) ^ x for the words this lane owns (W registers, selected without indexing)
template <int T>
POUW_HD void msg_update(unsigned* msg, int lane, int chunk, unsigned x) {
  constexpr int W = words_per_lane<T>();
  const int slot = chunk & (WORDS - 1);
  const bool mine = slot / W == owner_sub<T>(lane);
  const int j = slot % W;
#pragma unroll
  for (int w = 0; w < W; ++w) {
    const unsigned upd = rotl13(msg[w]) ^ x;
    msg[w] = (mine && w == j) ? upd : msg[w];
  }
}

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
// cross-lane part of the fold on the device: N values (one per warp-local tile) -> this lane's tile XOR (the
// butterfly of fold_split / fold_mask; emulate.cpp runs the same stages with an emulated shuffle)
template <int N, int S>
struct LaneFold {
  __device__ __forceinline__ static unsigned run(const unsigned* v, int lane) {
    unsigned keep[N / 2], send[N / 2];
    fold_split<N>(lane, S, v, keep, send);
#pragma unroll
    for (int i = 0; i < N / 2; ++i) keep[i] ^= __shfl_xor_sync(0xffffffffu, send[i], fold_mask(S));
    return LaneFold<N / 2, S + 1>::run(keep, lane);
  }
};
template <int S>
struct LaneFold<1, S> {
  __device__ __forceinline__ static unsigned run(const unsigned* v, int) {
    unsigned x = v[0];
#pragma unroll
    for (int s = S; s < 5; ++s) x ^= __shfl_xor_sync(0xffffffffu, x, fold_mask(s));
    return x;
  }
};
#endif

}  // namespace pouw
