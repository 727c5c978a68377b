// Host emulation of kernels/cuda_src/fused_mma.cu, lane by lane, for the tests (g++, no GPU): the same index maps
// and fold steps (mma_fold.h) the kernel runs, with the hardware parts written here from the PTX ISA instead:
// cp.async (16-byte copies with zero fill), mma.sync.m16n8k32 (fragments gathered from the 32 lanes by the ISA's
// own layout tables, not mma_fold.h's), and __shfl_xor_sync (lane-synchronous exchange). Block order, pipelining
// and timing are not emulated (they change no bits).
#include <cstdint>
#include <cstring>
#include <vector>

#include "mma_fold.h"

using namespace pouw;

namespace {

// PTX ISA, "Matrix Fragments for mma.m16n8k32" (.s8), element e of fragment register j of lane l
void isa_a(int l, int j, int e, int& row, int& col) {  // A: 16 x 32; element index i = 4j + e
  const int i = 4 * j + e, g = l >> 2, q = l & 3;
  row = (i < 4 || (i >= 8 && i < 12)) ? g : g + 8;
  col = q * 4 + (i & 3) + (i >= 8 ? 16 : 0);
}
void isa_b(int l, int j, int e, int& row, int& col) {  // B: 32 x 8; element index i = 4j + e
  const int i = 4 * j + e, g = l >> 2, q = l & 3;
  row = q * 4 + (i & 3) + (i >= 4 ? 16 : 0);
  col = g;
}
void isa_c(int l, int i, int& row, int& col) {  // C: 16 x 8
  const int g = l >> 2, q = l & 3;
  row = i < 2 ? g : g + 8;
  col = q * 2 + (i & 1);
}

template <int BM, int BN, int WM, int WN, int TH, int TW>
struct Emu {
  static constexpr int WARPS = (BM / WM) * (BN / WN), WARPS_N = BN / WN, NT = WARPS * 32;
  static constexpr int MI = WM / 16, NI = WN / 8, T = (WM / TH) * (WN / TW), W = words_per_lane<T>();
  struct Lane {
    uint32_t acc[MI][NI][4];
    uint32_t msg[W > 0 ? W : 1];
    uint32_t t[T];
  };
  std::vector<unsigned char> smem = std::vector<unsigned char>((BM + BN) * LDS);

  void load_stage(const int8_t* a, long long lda, int rows_a, const int8_t* b, long long ldb, int rows_b, int kb) {
    std::memset(smem.data(), 0xA5, smem.size());  // padding holds garbage, as on the device
    for (int i = 0; i < 2 * BM; ++i) {
      const int r = piece_row(i);
      unsigned char* dst = smem.data() + smem_offset(r, piece_byte(i));
      if (r < rows_a) std::memcpy(dst, a + r * lda + kb + piece_byte(i), 16); else std::memset(dst, 0, 16);
    }
    for (int i = 0; i < 2 * BN; ++i) {
      const int r = piece_row(i);
      unsigned char* dst = smem.data() + BM * LDS + smem_offset(r, piece_byte(i));
      if (r < rows_b) std::memcpy(dst, b + r * ldb + kb + piece_byte(i), 16); else std::memset(dst, 0, 16);
    }
  }

  static uint32_t ld32(const unsigned char* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }

  // ldmatrix.sync.aligned.m8n8.x4.shared.b16 (PTX ISA): lane 8i + r addresses row r of matrix i; lane l gets in
  // register i the 32-bit word (l & 3) of row l >> 2 of matrix i
  template <class Addr>
  static void ldsm_x4(const unsigned char* base, Addr addr, uint32_t out[32][4]) {
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < 4; ++i) out[l][i] = ld32(base + addr(8 * i + (l >> 2)) + 4 * (l & 3));
  }

  // one mma.sync of warp `lanes` on tile (mi, ni): gather fragments by the ISA tables, multiply, scatter
  void mma(Lane* lanes, int mi, int ni, uint32_t af[32][MI][4], uint32_t bf[32][NI][2]) {
    int8_t A[16][32], B[32][8];
    for (int l = 0; l < 32; ++l)
      for (int j = 0; j < 4; ++j)
        for (int e = 0; e < 4; ++e) { int r, c; isa_a(l, j, e, r, c); A[r][c] = int8_t(af[l][mi][j] >> (8 * e)); }
    for (int l = 0; l < 32; ++l)
      for (int j = 0; j < 2; ++j)
        for (int e = 0; e < 4; ++e) { int r, c; isa_b(l, j, e, r, c); B[r][c] = int8_t(bf[l][ni][j] >> (8 * e)); }
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < 4; ++i) {
        int r, c; isa_c(l, i, r, c);
        int32_t s = 0;
        for (int x = 0; x < 32; ++x) s += int32_t(A[r][x]) * int32_t(B[x][c]);
        lanes[l].acc[mi][ni][i] += uint32_t(s);
      }
  }

  // the kernel's LaneFold on all 32 lanes at once
  template <int N, int S>
  static void lane_fold(uint32_t v[32][T], uint32_t out[32]) {
    if constexpr (N == 1) {
      uint32_t x[32];
      for (int l = 0; l < 32; ++l) x[l] = v[l][0];
      for (int s = S; s < 5; ++s) {
        uint32_t y[32];
        for (int l = 0; l < 32; ++l) y[l] = x[l] ^ x[l ^ fold_mask(s)];
        std::memcpy(x, y, sizeof x);
      }
      std::memcpy(out, x, sizeof x);
    } else {
      uint32_t keep[32][T], send[32][T];
      for (int l = 0; l < 32; ++l) fold_split<N>(l, S, v[l], keep[l], send[l]);
      for (int l = 0; l < 32; ++l)
        for (int i = 0; i < N / 2; ++i) keep[l][i] ^= send[l ^ fold_mask(S)][i];
      lane_fold<N / 2, S + 1>(keep, out);
    }
  }

  void fold_pending(Lane* lanes, int chunk) {
    uint32_t v[32][T], x[32];
    for (int l = 0; l < 32; ++l) std::memcpy(v[l], lanes[l].t, sizeof lanes[l].t);
    lane_fold<T, 0>(v, x);
    for (int l = 0; l < 32; ++l) msg_update<T>(lanes[l].msg, l, chunk, x[l]);
  }

  // the kernel's gemm_range for every warp of one block
  void gemm_range(std::vector<Lane>& lanes, bool fold, const int8_t* a, long long lda, int rows_a,
                  const int8_t* b, long long ldb, int rows_b, int steps, int chunk_steps) {
    bool pending = false;
    int chunk = 0, in_chunk = 0;
    static uint32_t af[32][MI][4], bf[32][NI][2];
    for (int step = 0; step < steps; ++step) {
      load_stage(a, lda, rows_a, b, ldb, rows_b, step * KSTEP);
      const unsigned char* sa = smem.data();
      const unsigned char* sb = sa + BM * LDS;
      for (int w = 0; w < WARPS; ++w) {
        Lane* ln = &lanes[w * 32];
        const int wrow = (w / WARPS_N) * WM, wcol = (w % WARPS_N) * WN;
        for (int mi = 0; mi < MI; ++mi) {
          uint32_t r[32][4];
          ldsm_x4(sa, [&](int l) { return a_ldsm_offset(l, wrow + 16 * mi); }, r);
          for (int l = 0; l < 32; ++l)
            for (int j = 0; j < 4; ++j) af[l][mi][j] = r[l][j];
        }
        for (int ni = 0; ni < NI; ni += 2) {
          uint32_t r[32][4];
          ldsm_x4(sb, [&](int l) { return b_ldsm_offset(l, wcol + 8 * ni); }, r);
          for (int l = 0; l < 32; ++l)
            for (int j = 0; j < 4; ++j) bf[l][ni + (j >> 1)][j & 1] = r[l][j];
        }
        for (int mi = 0; mi < MI; ++mi)
          for (int ni = 0; ni < NI; ++ni) mma(ln, mi, ni, af, bf);
        if (fold) {
          if (pending) fold_pending(ln, chunk - 1);
          if (in_chunk + 1 == chunk_steps) {
            for (int l = 0; l < 32; ++l) {
              for (int i = 0; i < T; ++i) ln[l].t[i] = 0;
              for (int mi = 0; mi < MI; ++mi)
                for (int ni = 0; ni < NI; ++ni)
                  for (int j = 0; j < 4; ++j) ln[l].t[tile_of_mma<WN, TH, TW>(mi, ni)] ^= ln[l].acc[mi][ni][j];
            }
          }
        }
      }
      if (fold) {
        pending = false;
        if (++in_chunk == chunk_steps) { in_chunk = 0; ++chunk; pending = true; }
      }
    }
    if (fold && pending)
      for (int w = 0; w < WARPS; ++w) fold_pending(&lanes[w * 32], chunk - 1);
  }

  int run(const int8_t* a, const int8_t* bt, int32_t* c, int32_t* msgs, const int8_t* u, const int8_t* vt, int M,
          int N, int K, int R, int digits, int CW, bool transcript, int recover) {
    std::vector<Lane> lanes(NT), corr(NT);
    const int grid_m = (M + BM - 1) / BM, grid_n = (N + BN - 1) / BN;
    std::vector<int> seen(grid_m * grid_n, 0);
    for (int pid = 0; pid < grid_m * grid_n; ++pid) {  // the launch's programs, each its block_of
        int pid_m, pid_n;
        block_of(pid, grid_m, grid_n, pid_m, pid_n);
        if (pid_m < 0 || pid_m >= grid_m || pid_n < 0 || pid_n >= grid_n || seen[pid_m * grid_n + pid_n]++) return -3;
        const int m0 = pid_m * BM, n0 = pid_n * BN;
        std::memset(lanes.data(), 0, lanes.size() * sizeof(Lane));
        gemm_range(lanes, transcript, a + (long long)m0 * K, K, M - m0, bt + (long long)n0 * K, K, N - n0,
                   K / KSTEP, R / KSTEP);
        if (digits > 0 && recover == 1) {  // second accumulator
          correction(corr, u, vt, M - m0, N - n0, m0, n0, digits, CW);
          for (int x = 0; x < NT; ++x)
            for (int mi = 0; mi < MI; ++mi)
              for (int ni = 0; ni < NI; ++ni)
                for (int j = 0; j < 4; ++j) lanes[x].acc[mi][ni][j] -= corr[x].acc[mi][ni][j];
        }
        for (int w = 0; w < WARPS; ++w) {
          const int wrow = (w / WARPS_N) * WM, wcol = (w % WARPS_N) * WN;
          for (int l = 0; l < 32; ++l) {
            const Lane& ln = lanes[w * 32 + l];
            store_c(ln.acc, c, M, N, m0 + wrow, n0 + wcol, l, false);
            if (transcript) {
              const int tw = owner_tile<T>(l), tiles_n = N / TW;
              const int ti = (m0 + wrow) / TH + tw / (WN / TW), tj = (n0 + wcol) / TW + tw % (WN / TW);
              if (ti < M / TH && tj < tiles_n)
                for (int x = 0; x < W; ++x)
                  msgs[((long long)ti * tiles_n + tj) * WORDS + owner_sub<T>(l) * W + x] = int32_t(ln.msg[x]);
            }
          }
        }
        if (digits > 0 && recover == 2) {  // C' stored above; correction in the same registers, C -= it in place
          correction(lanes, u, vt, M - m0, N - n0, m0, n0, digits, CW);
          for (int w = 0; w < WARPS; ++w)
            for (int l = 0; l < 32; ++l)
              store_c(lanes[w * 32 + l].acc, c, M, N, m0 + (w / WARPS_N) * WM, n0 + (w % WARPS_N) * WN, l, true);
        }
      }
    return 0;
  }

  // the kernel's correction(): Horner over the digits into `out` (zeroed first), mod 2^32
  void correction(std::vector<Lane>& out, const int8_t* u, const int8_t* vt, int rows_u, int rows_v, int m0, int n0,
                  int digits, int CW) {
    for (auto& ln : out) std::memset(ln.acc, 0, sizeof ln.acc);
    const long long ldu = (long long)digits * CW;
    for (int i = digits - 1; i >= 0; --i) {
      for (auto& ln : out)
        for (int mi = 0; mi < MI; ++mi)
          for (int ni = 0; ni < NI; ++ni)
            for (int j = 0; j < 4; ++j) ln.acc[mi][ni][j] <<= 7;
      gemm_range(out, false, u + (long long)m0 * ldu + i * CW, ldu, rows_u, vt + (long long)n0 * ldu + i * CW, ldu,
                 rows_v, CW / KSTEP, 1);
    }
  }

  // the kernel's store_c: C = acc, or with sub, C -= acc
  static void store_c(const uint32_t (&acc)[MI][NI][4], int32_t* c, int M, int N, int row0, int col0, int l,
                      bool sub) {
    for (int mi = 0; mi < MI; ++mi)
      for (int ni = 0; ni < NI; ++ni)
        for (int j = 0; j < 4; ++j) {
          const int row = row0 + 16 * mi + c_row(l, j), col = col0 + 8 * ni + c_col(l, j);
          if (row < M && col < N) {
            int32_t* p = c + (long long)row * N + col;
            *p = sub ? int32_t(uint32_t(*p) - acc[mi][ni][j]) : int32_t(acc[mi][ni][j]);
          }
        }
  }
};

template <int BM, int BN, int WM, int WN, int TH, int TW>
int run_geometry(const int8_t* a, const int8_t* bt, int32_t* c, int32_t* m, const int8_t* u, const int8_t* vt,
                 int M, int N, int K, int R, int digits, int CW, bool tr, int rec) {
  if constexpr (WM % TH || WN % TW || (WM / TH) * (WN / TW) < 2 || (WM / TH) * (WN / TW) > 32) {
    return -1;  // this tile does not fit this warp tile
  } else {
    static Emu<BM, BN, WM, WN, TH, TW> emu;
    return emu.run(a, bt, c, m, u, vt, M, N, K, R, digits, CW, tr, rec);
  }
}

// geometry: index into kernels/cuda_mma.py GEOMETRIES
template <int TH, int TW>
int run_tile(const int8_t* a, const int8_t* bt, int32_t* c, int32_t* m, const int8_t* u, const int8_t* vt, int M,
             int N, int K, int R, int digits, int CW, bool tr, int geometry, int rec) {
  switch (geometry) {
    case 0: return run_geometry<128, 128, 64, 32, TH, TW>(a, bt, c, m, u, vt, M, N, K, R, digits, CW, tr, rec);
    case 1: return run_geometry<128, 128, 32, 64, TH, TW>(a, bt, c, m, u, vt, M, N, K, R, digits, CW, tr, rec);
    case 2: return run_geometry<64, 128, 32, 64, TH, TW>(a, bt, c, m, u, vt, M, N, K, R, digits, CW, tr, rec);
    default: return -1;
  }
}

}  // namespace

extern "C" int pouw_mma_emulate(const int8_t* a, const int8_t* bt, int32_t* c, int32_t* msgs, const int8_t* u,
                                const int8_t* vt, int M, int N, int K, int R, int digits, int CW, int th, int tw,
                                int transcript, int geometry, int recover) {
  if (K % R || R % KSTEP || (digits > 0 && CW % KSTEP) || M % th || N % tw || recover < 1 || recover > 2) return -2;
  const bool tr = transcript != 0;
#define POUW_TILE(H, W_) if (th == H && tw == W_) return run_tile<H, W_>(a, bt, c, msgs, u, vt, M, N, K, R, digits, CW, tr, geometry, recover);
  POUW_TILE(16, 16) POUW_TILE(16, 8) POUW_TILE(32, 16) POUW_TILE(16, 32) POUW_TILE(32, 32) POUW_TILE(64, 16)
  POUW_TILE(16, 64) POUW_TILE(32, 64)
#undef POUW_TILE
  return -1;  // tile not supported by the kernel
}

// ================================================================ the sm_90a wgmma kernel (fused_wgmma.cu)
// Emulated per consumer warpgroup (128 threads), with the kernel's index maps, descriptors, wait points and fold
// (wgmma_fold.h, mma_fold.h) and the hardware parts written here from the PTX ISA / CUDA driver documentation:
// TMA's 2-D box copy with CU_TENSOR_MAP_SWIZZLE_128B and zero fill, the wgmma matrix descriptor's decoding
// (K-major, 128-byte swizzle), the m64nNk32 s8 product and its accumulator fragment layout, shuffles. Not
// emulated (they change no bits): the ping-pong order, mbarrier waits, asynchrony. Checked: a consumer never
// reads a stage it has released, and releases each stage of a range exactly once.
#include "wgmma_fold.h"

namespace {

// TMA (cp.async.bulk.tensor.2d, SWIZZLE_128B, box 128 bytes x rows): byte (row, col) of the box lands at
// row * 128 + ((col / 16) ^ (row % 8)) * 16 + col % 16 from the 1024-aligned destination; outside the tensor,
// zeros
void isa_tma_box(unsigned char* dst, const int8_t* src, long long ld, int width, int height, int col0, int row0,
                 int rows) {
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < 128; ++b) {
      const int gr = row0 + r, gc = col0 + b;
      const unsigned char v = (gr < height && gc < width) ? static_cast<unsigned char>(src[gr * ld + gc]) : 0;
      dst[r * 128 + (((b >> 4) ^ (r & 7)) << 4) + (b & 15)] = v;
    }
}

// wgmma operand element (row, k) (k a byte inside the instruction's 32) through a descriptor (PTX ISA, "Matrix
// Descriptor Format" and "Shared Memory Matrix Layout", K-major, 128-byte swizzle): rows in groups of 8 at the
// stride byte offset, 128 bytes a row inside a group, the swizzle XORing address bits 4..6 with bits 7..9
int isa_desc_addr(unsigned long long desc, int row, int k, int& err) {
  const int start = int(desc & 0x3FFF) << 4, sbo = int((desc >> 32) & 0x3FFF) << 4;
  const int layout = int(desc >> 62), base_offset = int((desc >> 49) & 7);
  if (layout != 1 || base_offset != 0) err = -5;
  const int a = start + (row / 8) * sbo + (row % 8) * 128 + k;
  return a ^ (((a >> 7) & 7) << 4);
}

// accumulator fragment of wgmma .m64nNk32 (PTX ISA figure "WGMMA .m64nNk32 register fragment layout for
// accumulator matrix D"): thread t of the warpgroup, register v
void isa_wg_d(int t, int v, int& row, int& col) {
  row = 16 * (t / 32) + (t % 32) / 4 + 8 * ((v % 4) / 2);
  col = 8 * (v / 4) + 2 * (t % 4) + (v % 2);
}

// the kernel's LaneFold over 32 lanes (fold_split, fold_mask of mma_fold.h; an emulated __shfl_xor_sync)
template <int T, int N, int S>
void wg_lane_fold(uint32_t (*v)[T], uint32_t* out) {
  if constexpr (N == 1) {
    uint32_t x[32];
    for (int l = 0; l < 32; ++l) x[l] = v[l][0];
    for (int s = S; s < 5; ++s) {
      uint32_t y[32];
      for (int l = 0; l < 32; ++l) y[l] = x[l] ^ x[l ^ fold_mask(s)];
      std::memcpy(x, y, sizeof x);
    }
    std::memcpy(out, x, sizeof x);
  } else {
    uint32_t keep[32][T], send[32][T];
    for (int l = 0; l < 32; ++l) fold_split<N>(l, S, v[l], keep[l], send[l]);
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < N / 2; ++i) keep[l][i] ^= send[l ^ fold_mask(S)][i];
    wg_lane_fold<T, N / 2, S + 1>(keep, out);
  }
}

template <int BN, int TW>
struct WgEmu {
  static constexpr int REGS = BN / 2, T = BN / TW, W = words_per_lane<T>();
  static constexpr int STAGE_A = wg::BM * wg::KBOX, STAGE = STAGE_A + BN * wg::KBOX;
  struct Thread {
    uint32_t acc[REGS];
    uint32_t msg[W];
    uint32_t t[T];
  };
  int stages = 4;
  std::vector<unsigned char> ring;
  std::vector<int> slot_item;  // which item each ring slot holds
  // the tensors of the current launch: 0 A, 1 B^T, 2 U, 3 V^T
  const int8_t* src[4];
  long long ld[4];
  int width[4], height[4];
  int m0 = 0, n0 = 0, main_items = 0, dig_items = 0, digits = 0, CW = 0;

  // the producer's item -> (tensor pair, column) (fused_wgmma.cu) and TMA of both boxes into the item's slot
  void load(int it) {
    const int slot = it % stages;
    if (slot_item[slot] == it) return;
    int ma = 0, col = wg::KBOX * it;
    if (it >= main_items) {
      const int d = (it - main_items) / dig_items, j = (it - main_items) % dig_items;
      ma = 2;
      col = (digits - 1 - d) * CW + wg::KBOX * j;
    }
    unsigned char* dst = ring.data() + slot * STAGE;
    isa_tma_box(dst, src[ma], ld[ma], width[ma], height[ma], col, m0, wg::BM);
    isa_tma_box(dst + STAGE_A, src[ma + 1], ld[ma + 1], width[ma + 1], height[ma + 1], col, n0, BN);
    slot_item[slot] = it;
  }

  // one wgmma of consumer w: operands through the kernel's descriptors, D through the ISA fragment layout
  int wgmma(Thread* th, unsigned da, unsigned db) {
    int err = 0;
    int8_t A[64][32], B[BN][32];
    const unsigned long long dA = wg::smem_desc(da), dB = wg::smem_desc(db);
    for (int r = 0; r < 64; ++r)
      for (int k = 0; k < 32; ++k) A[r][k] = int8_t(ring[isa_desc_addr(dA, r, k, err)]);
    for (int r = 0; r < BN; ++r)
      for (int k = 0; k < 32; ++k) B[r][k] = int8_t(ring[isa_desc_addr(dB, r, k, err)]);
    for (int t = 0; t < 128; ++t)
      for (int v = 0; v < REGS; ++v) {
        int row, col;
        isa_wg_d(t, v, row, col);
        int32_t s = 0;
        for (int k = 0; k < 32; ++k) s += int32_t(A[row][k]) * int32_t(B[col][k]);
        th[t].acc[v] += uint32_t(s);
      }
    return err;
  }

  void fold_pending(Thread* th, int chunk) {
    for (int q = 0; q < 4; ++q) {
      uint32_t v[32][T], x[32];
      for (int l = 0; l < 32; ++l) std::memcpy(v[l], th[32 * q + l].t, sizeof v[l]);
      wg_lane_fold<T, T, 0>(v, x);
      for (int l = 0; l < 32; ++l) msg_update<T>(th[32 * q + l].msg, l, chunk, x[l]);
    }
  }

  // the kernel's consume_range for consumer w (128 threads)
  int consume_range(Thread* th, int w, int item, int steps, int chunk_steps, bool fold) {
    bool pending = false;
    int released = 0, chunk = 0, group_first = item;  // the first item the newest wgmma group reads
    for (int s = 0; s < steps; ++s) {
      const int it = item + s / wg::SUBSTEPS;
      if (it - item < released) return -4;  // reads a stage it released
      if (s > 0 && wg::commits_after(s - 1, steps, chunk_steps)) group_first = it;
      load(it);
      const unsigned stage = unsigned((it % stages) * STAGE);
      if (int e = wgmma(th, wg::operand_addr(stage, wg::WG_M * w, s % wg::SUBSTEPS),
                        wg::operand_addr(stage + STAGE_A, 0, s % wg::SUBSTEPS)))
        return e;
      if (!wg::commits_after(s, steps, chunk_steps)) continue;
      if (fold && pending) { fold_pending(th, chunk - 1); pending = false; }
      const int rel = wg::released_after(s, steps, chunk_steps);
      if (rel < released || rel > wg::stages_of(steps)) return -4;
      // a released stage is read by no wgmma still in flight (wait_group 1: the newest group) or to come
      const bool stage_done = s + 1 == steps || (s + 1) % wg::SUBSTEPS == 0;
      if (item + rel > (wg::full_wait_after(s, steps, chunk_steps) ? it + stage_done : group_first)) return -4;
      if (wg::full_wait_after(s, steps, chunk_steps) && fold && (s + 1) % chunk_steps == 0) {
        for (int x = 0; x < 128; ++x) {
          for (int i = 0; i < T; ++i) th[x].t[i] = 0;
          for (int v = 0; v < REGS; ++v) th[x].t[wg::tile_of_reg<BN, TW>(v)] ^= th[x].acc[v];
        }
        ++chunk;
        pending = true;
      }
      released = rel;
    }
    if (fold && pending) fold_pending(th, chunk - 1);
    return released == wg::stages_of(steps) ? 0 : -4;
  }

  static void store_c(const Thread* th, int32_t* c, int M, int N, int row0, int col0, bool sub) {
    for (int x = 0; x < 128; ++x)
      for (int v = 0; v < REGS; ++v) {
        const int row = row0 + wg::d_row(x / 32, x % 32, v), col = col0 + wg::d_col(x % 32, v);
        if (row < M && col < N) {
          int32_t* p = c + (long long)row * N + col;
          *p = sub ? int32_t(uint32_t(*p) - th[x].acc[v]) : int32_t(th[x].acc[v]);
        }
      }
  }

  int run(const int8_t* a, const int8_t* bt, int32_t* c, int32_t* msgs, const int8_t* u, const int8_t* vt, int M,
          int N, int K, int R, int digits_, int CW_, bool transcript, bool recover, int stages_) {
    stages = stages_;
    digits = recover ? digits_ : 0;
    CW = CW_;
    ring.assign(size_t(stages) * STAGE, 0xA5);
    const long long ldu = (long long)digits_ * CW_;
    const int8_t* s4[4] = {a, bt, u, vt};
    const long long l4[4] = {K, K, ldu, ldu};
    const int w4[4] = {K, K, int(ldu), int(ldu)}, h4[4] = {M, N, M, N};
    for (int i = 0; i < 4; ++i) { src[i] = s4[i]; ld[i] = l4[i]; width[i] = w4[i]; height[i] = h4[i]; }
    const int ksteps = K / KSTEP, dsteps = CW / KSTEP;
    main_items = wg::stages_of(ksteps);
    dig_items = wg::stages_of(dsteps);
    const int grid_m = (M + wg::BM - 1) / wg::BM, grid_n = (N + BN - 1) / BN;
    std::vector<int> seen(grid_m * grid_n, 0);
    std::vector<Thread> th(128);
    for (int pid = 0; pid < grid_m * grid_n; ++pid) {
      int pid_m, pid_n;
      block_of(pid, grid_m, grid_n, pid_m, pid_n);
      if (pid_m < 0 || pid_m >= grid_m || pid_n < 0 || pid_n >= grid_n || seen[pid_m * grid_n + pid_n]++) return -3;
      m0 = pid_m * wg::BM;
      n0 = pid_n * BN;
      for (int w = 0; w < 2; ++w) {  // the two consumers, one after the other (they share the ring's items)
        slot_item.assign(stages, -1);
        std::memset(th.data(), 0, th.size() * sizeof(Thread));
        if (int e = consume_range(th.data(), w, 0, ksteps, transcript ? R / KSTEP : ksteps, transcript)) return e;
        const int row0 = m0 + wg::WG_M * w;
        if (transcript)
          for (int x = 0; x < 128; ++x) {
            const int q = x / 32, l = x % 32, tiles_n = N / TW;
            const int ti = (row0 + 16 * q) / wg::TH, tj = n0 / TW + owner_tile<T>(l);
            if (ti < M / wg::TH && tj < tiles_n)
              for (int i = 0; i < W; ++i)
                msgs[((long long)ti * tiles_n + tj) * WORDS + owner_sub<T>(l) * W + i] = int32_t(th[x].msg[i]);
          }
        store_c(th.data(), c, M, N, row0, n0, false);
        if (digits > 0) {
          for (auto& x : th) std::memset(x.acc, 0, sizeof x.acc);
          int item = main_items;
          for (int d = 0; d < digits; ++d, item += dig_items) {
            for (auto& x : th)
              for (int v = 0; v < REGS; ++v) x.acc[v] <<= 7;
            if (int e = consume_range(th.data(), w, item, dsteps, dsteps, false)) return e;
          }
          store_c(th.data(), c, M, N, row0, n0, true);
        }
      }
    }
    return 0;
  }
};

template <int BN, int TW>
int run_wg(const int8_t* a, const int8_t* bt, int32_t* c, int32_t* m, const int8_t* u, const int8_t* vt, int M, int N,
           int K, int R, int digits, int CW, bool tr, bool rec, int stages) {
  if constexpr (BN % TW || BN / TW < 2 || BN / TW > 32) {
    return -1;
  } else {
    static WgEmu<BN, TW> emu;
    return emu.run(a, bt, c, m, u, vt, M, N, K, R, digits, CW, tr, rec, stages);
  }
}

}  // namespace

extern "C" int pouw_wgmma_emulate(const int8_t* a, const int8_t* bt, int32_t* c, int32_t* msgs, const int8_t* u,
                                  const int8_t* vt, int M, int N, int K, int R, int digits, int CW, int tw,
                                  int transcript, int bn, int stages, int recover) {
  if (K % R || R % KSTEP || (digits > 0 && CW % KSTEP) || M % wg::TH || N % tw || stages < 2) return -2;
  const bool tr = transcript != 0, rec = recover != 0 && digits > 0;
#define POUW_WG(B, W_) if (bn == B && tw == W_) return run_wg<B, W_>(a, bt, c, msgs, u, vt, M, N, K, R, digits, CW, tr, rec, stages);
  POUW_WG(128, 8) POUW_WG(128, 16) POUW_WG(128, 32) POUW_WG(128, 64)
  POUW_WG(256, 8) POUW_WG(256, 16) POUW_WG(256, 32) POUW_WG(256, 64) POUW_WG(256, 128)
#undef POUW_WG
  return -1;
}

// the kernel's accumulator map (wgmma_fold.h d_row, d_col) for the tests: rows[128 * v + t], cols[...]
extern "C" int pouw_wgmma_maps(int bn, int* rows, int* cols) {
  if (bn != 128 && bn != 256) return -1;
  for (int t = 0; t < 128; ++t)
    for (int v = 0; v < bn / 2; ++v) {
      rows[128 * v + t] = wg::d_row(t / 32, t % 32, v);
      cols[128 * v + t] = wg::d_col(t % 32, v);
    }
  return 0;
}
