// Fused mining GEMM for sm_90a (H100 / H200): C' = A'B' exactly (int8 in, int32 out) on wgmma, the transcript of
// docs/protocol.md section 4 folded at every chunk of r columns of k with the mma.sync kernel's fold steps
// (mma_fold.h, wgmma_fold.h), and optionally the recovery C = C' - sum_i 128^i U_i V_i as an epilogue.
//
// Warp specialisation (384 threads, three warpgroups). Warpgroup 0 is the producer: it gives up registers
// (setmaxnreg) and one thread issues TMA loads (cp.async.bulk.tensor, 128-byte swizzle) of the block's A and B^T
// tiles, 128 columns of k a stage, into a ring of STAGES stages; stage s is guarded by mbarrier full[s] (TMA
// transaction bytes) and empty[s] (one arrival per consumer warp once the wgmmas that read it are complete).
// Warpgroups 1 and 2 are consumers: consumer w owns rows 64w .. 64w + 63 of the block as one m64nBNk32
// accumulator (both read the same B tile of a stage) and issues wgmma.mma_async from the stage's descriptors.
//
// Ping-pong (as FlashAttention-3 hides its softmax). The fold of chunk c needs chunk c's wgmmas complete
// (wgmma.wait_group 0), so a warpgroup alone would leave the tensor cores idle during its fold. Two named
// barriers order the consumers' issue: consumer w waits for its turn (bar.sync PP + w), issues chunk c's wgmmas,
// commits, passes the turn (bar.arrive PP + 1 - w), waits for its group and folds, so the tensor cores run one
// warpgroup's chunk while the other folds. Inside a warpgroup, the cross-lane part of chunk c's fold (butterfly
// and message update, which read no accumulator) is issued after chunk c + 1's wgmmas, as in fused_mma.cu.
//
// Operands: tensor maps (kernels/cuda_mma.py, cuTensorMapEncodeTiled; 128 bytes each in global memory) of A
// (M x K), B^T (N x K), U (M x digits*CW) and V^T (N x digits*CW), int8, K-contiguous, box 128 columns x 128 / BN
// rows, 128-byte swizzle, zero fill out of bounds. Requires K a multiple of R, R of 32, CW of 32, M of 16, N of TW,
// 2 <= BN / TW <= 32. Compiled for sm_90a only (wgmma, setmaxnreg); rows past M / N are zeros and stores masked.
#include "wgmma_fold.h"

namespace pouw {
namespace wg {

constexpr int PP = 1;          // named barriers PP, PP + 1: consumer 0's and consumer 1's turn to issue
constexpr int CONSUMER_WARPS = 8;

__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// ---- mbarriers (PTX ISA, "Parallel Synchronization and Communication Instructions: mbarrier")
__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// waits for the phase of `parity` to complete; after 2^26 failed polls (each try_wait may suspend the thread up to
// a hardware time limit: a second or more in all, where a correct pipeline waits microseconds) it traps, so a
// fault in the pipeline ends the launch with an error instead of hanging the device check (in the asm: a
// counter in C++ costs the heaviest instance registers and spills)
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
  asm volatile(
      "{\n.reg .pred done;\n.reg .u32 n;\n"
      "mov.u32 n, 0;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@done bra DONE_%=;\n"
      "add.u32 n, n, 1;\n"
      "setp.lt.u32 done, n, %2;\n"
      "@done bra WAIT_%=;\n"
      "trap;\n"
      "DONE_%=:\n}\n" ::"r"(bar),
      "r"(parity), "n"(1 << 26)
      : "memory");
}

// ---- TMA: a box of the tensor map at `map` (global memory, 128 bytes) to shared memory, completing on `bar`
__device__ __forceinline__ void tma_acquire(const void* map) {
  asm volatile("fence.proxy.tensormap::generic.acquire.gpu [%0], 128;\n" ::"l"(map) : "memory");
}
__device__ __forceinline__ void tma_load_2d(unsigned dst, const void* map, int col, int row, unsigned bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
      ::"r"(dst), "l"(map), "r"(col), "r"(row), "r"(bar) : "memory");
}

// ---- named barriers of the ping-pong (both consumer warpgroups count: 256 threads)
__device__ __forceinline__ void bar_sync(int id) { asm volatile("bar.sync %0, 256;\n" ::"r"(id) : "memory"); }
__device__ __forceinline__ void bar_arrive(int id) { asm volatile("bar.arrive %0, 256;\n" ::"r"(id) : "memory"); }

// ---- wgmma (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate")
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// keeps the compiler from moving accumulator reads or writes across an asynchronous wgmma's issue or wait
template <int R>
__device__ __forceinline__ void fence_acc(unsigned (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+r"(d[i])::"memory");
}

// D (64 x 128, int32, 64 registers a thread) += A (64 x 32, descriptor) * B (32 x 128, descriptor, K-major)
__device__ __forceinline__ void wgmma_n128(unsigned (&d)[64], unsigned long long da, unsigned long long db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63},"
      " %64, %65, p;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
        "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
        "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
        "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
      : "l"(da), "l"(db));
}

// D (64 x 256, int32, 128 registers a thread) += A (64 x 32, descriptor) * B (32 x 256, descriptor, K-major)
__device__ __forceinline__ void wgmma_n256(unsigned (&d)[128], unsigned long long da, unsigned long long db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,"
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95,"
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111,"
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127},"
      " %128, %129, p;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
        "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
        "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
        "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63]),
        "+r"(d[64]), "+r"(d[65]), "+r"(d[66]), "+r"(d[67]), "+r"(d[68]), "+r"(d[69]), "+r"(d[70]), "+r"(d[71]),
        "+r"(d[72]), "+r"(d[73]), "+r"(d[74]), "+r"(d[75]), "+r"(d[76]), "+r"(d[77]), "+r"(d[78]), "+r"(d[79]),
        "+r"(d[80]), "+r"(d[81]), "+r"(d[82]), "+r"(d[83]), "+r"(d[84]), "+r"(d[85]), "+r"(d[86]), "+r"(d[87]),
        "+r"(d[88]), "+r"(d[89]), "+r"(d[90]), "+r"(d[91]), "+r"(d[92]), "+r"(d[93]), "+r"(d[94]), "+r"(d[95]),
        "+r"(d[96]), "+r"(d[97]), "+r"(d[98]), "+r"(d[99]), "+r"(d[100]), "+r"(d[101]), "+r"(d[102]), "+r"(d[103]),
        "+r"(d[104]), "+r"(d[105]), "+r"(d[106]), "+r"(d[107]), "+r"(d[108]), "+r"(d[109]), "+r"(d[110]), "+r"(d[111]),
        "+r"(d[112]), "+r"(d[113]), "+r"(d[114]), "+r"(d[115]), "+r"(d[116]), "+r"(d[117]), "+r"(d[118]), "+r"(d[119]),
        "+r"(d[120]), "+r"(d[121]), "+r"(d[122]), "+r"(d[123]), "+r"(d[124]), "+r"(d[125]), "+r"(d[126]), "+r"(d[127])
      : "l"(da), "l"(db));
}

template <int BN>
__device__ __forceinline__ void wgmma_bn(unsigned (&d)[BN / 2], unsigned long long da, unsigned long long db) {
  if constexpr (BN == 256) wgmma_n256(d, da, db); else wgmma_n128(d, da, db);
}

template <int BN, int STAGES, int TW>
struct Cfg {
  static constexpr int REGS = BN / 2;                 // accumulator registers a consumer thread
  static constexpr int T = BN / TW;                   // protocol tiles per warp (16 x TW each)
  static constexpr int W = words_per_lane<T>();
  static constexpr int STAGE_A = BM * KBOX, STAGE_B = BN * KBOX, STAGE = STAGE_A + STAGE_B;
  static constexpr int SMEM = STAGES * STAGE + ATOM + 2 * STAGES * 8;  // ring, alignment slack, mbarriers
  static_assert(BN == 128 || BN == 256, "wgmma N: 128 or 256");
  static_assert(BN % TW == 0 && TW % 8 == 0 && T >= 2 && T <= 32 && (T & (T - 1)) == 0, "2 <= BN/TW <= 32");
  static_assert(STAGES >= 2, "at least two stages");
};

// The consumers' pass over one range of k steps (the main GEMM, or one digit of the correction): wait for each
// stage, issue its wgmmas, commit and wait at wgmma_fold.h's points, release stages, and with FOLD fold every
// chunk into msg (chunks counted from 0). `item` is the range's first pipeline item; `pp` its ping-pong turns.
template <class G, int BN, int STAGES, int TW, bool FOLD>
__device__ __forceinline__ void consume_range(unsigned (&acc)[G::REGS], unsigned (&msg)[G::W], unsigned ring,
                                              unsigned bars, int item, int steps, int chunk_steps, int w,
                                              int lane, bool pp) {
  const int nchunks = FOLD ? steps / chunk_steps : 1;
  unsigned t[G::T];
  bool pending = false;
  int released = 0, chunk = 0;
  if (pp) bar_sync(PP + w);
  wgmma_fence();
  fence_acc(acc);
  for (int s = 0; s < steps; ++s) {
    const int it = item + s / SUBSTEPS, slot = it % STAGES;
    const unsigned stage = ring + slot * G::STAGE;
    if (s % SUBSTEPS == 0) mbar_wait(bars + 8 * slot, (it / STAGES) & 1);
    wgmma_bn<BN>(acc, smem_desc(operand_addr(stage, WG_M * w, s % SUBSTEPS)),
                 smem_desc(operand_addr(stage + G::STAGE_A, 0, s % SUBSTEPS)));
    if (!commits_after(s, steps, chunk_steps)) continue;
    wgmma_commit();
    const bool full = full_wait_after(s, steps, chunk_steps);
    if (full && pp && (w == 0 || chunk + 1 < nchunks)) bar_arrive(PP + 1 - w);  // the other consumer's turn
    if (FOLD && pending) {  // previous chunk's cross-lane fold (reads t, not acc), behind this group's wgmmas
      msg_update<G::T>(msg, lane, chunk - 1, LaneFold<G::T, 0>::run(t, lane));
      pending = false;
    }
    const int rel = released_after(s, steps, chunk_steps);
    // every read of acc sits in the branch that waited for all groups (ptxas's check is path-insensitive: an
    // acc read reachable from the wait_group 1 branch would make it serialise every wgmma)
    if (full) {
      wgmma_wait<0>();
      fence_acc(acc);
      if (lane == 0)
        for (int i = released; i < rel; ++i) mbar_arrive(bars + 8 * (STAGES + (item + i) % STAGES));
      if (FOLD && (s + 1) % chunk_steps == 0) {  // in-thread XOR of S_chunk per tile
#pragma unroll
        for (int i = 0; i < G::T; ++i) t[i] = 0;
#pragma unroll
        for (int v = 0; v < G::REGS; ++v) t[tile_of_reg<BN, TW>(v)] ^= acc[v];
        ++chunk;
        pending = true;
      }
      if (pp && s + 1 < steps) bar_sync(PP + w);  // next chunk: wait for the turn, then issue
      wgmma_fence();
      fence_acc(acc);
    } else {  // a stage ends inside a chunk: all but this group are complete
      wgmma_wait<1>();
      if (lane == 0)
        for (int i = released; i < rel; ++i) mbar_arrive(bars + 8 * (STAGES + (item + i) % STAGES));
    }
    released = rel;
  }
  wgmma_wait<0>();  // (a no-op: the last step waited for all; it tells ptxas so)
  fence_acc(acc);
  if (FOLD && pending) msg_update<G::T>(msg, lane, chunk - 1, LaneFold<G::T, 0>::run(t, lane));
}

// C[rows, cols of this thread's registers] = acc, or with SUB, C -= acc (registers 2h, 2h + 1: one row, two
// adjacent columns; N is a multiple of 8, so int2 stores)
template <int BN, bool SUB>
__device__ __forceinline__ void store_c(const unsigned (&acc)[BN / 2], int* c, int M, int N, int row0, int col0,
                                        int q, int lane) {
#pragma unroll
  for (int v = 0; v < BN / 2; v += 2) {
    const int row = row0 + d_row(q, lane, v), col = col0 + d_col(lane, v);
    if (row < M && col < N) {
      int2* p = reinterpret_cast<int2*>(c + (long long)row * N + col);
      int2 x = make_int2(static_cast<int>(acc[v]), static_cast<int>(acc[v + 1]));
      if (SUB) {
        const int2 old = *p;
        x = make_int2(static_cast<int>(static_cast<unsigned>(old.x) - acc[v]),
                      static_cast<int>(static_cast<unsigned>(old.y) - acc[v + 1]));
      }
      *p = x;
    }
  }
}

}  // namespace wg
}  // namespace pouw

// One 128 x BN block of C (block order: block_of of mma_fold.h) and, with TRANSCRIPT, its tiles' messages
// (int32 words of an (M/16, N/TW, 16) tensor). RECOVER: C' stored, then the correction computed in the same
// registers (Horner over the digits) and subtracted from C in place. maps: 4 tensor maps (A, B^T, U, V^T).
template <int BN, int STAGES, int TW, bool TRANSCRIPT, bool RECOVER>
__global__ void __launch_bounds__(384, 1)
    pouw_fused_wgmma(const void* __restrict__ maps, int* __restrict__ c, int* __restrict__ msgs, int M, int N, int K,
                     int R, int digits, int CW) {
  using namespace pouw;
  using namespace pouw::wg;
  using G = Cfg<BN, STAGES, TW>;
  extern __shared__ unsigned char smem_raw[];
  const unsigned raw = smem_u32(smem_raw);
  const unsigned ring = (raw + ATOM - 1) & ~unsigned(ATOM - 1);
  const unsigned bars = ring + STAGES * G::STAGE;  // full[0 .. STAGES), then empty[0 .. STAGES), 8 bytes each
  const unsigned char* map = static_cast<const unsigned char*>(maps);
  int pid_m, pid_n;
  block_of(blockIdx.x, (M + BM - 1) / BM, (N + BN - 1) / BN, pid_m, pid_n);
  const int m0 = pid_m * BM, n0 = pid_n * BN;
  const int tid = threadIdx.x, wgi = tid >> 7, lane = tid & 31;
  const int ksteps = K / KSTEP, dsteps = CW / KSTEP, ndig = RECOVER ? digits : 0;

  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(bars + 8 * s, 1);                            // full: the producer's expect_tx arrival
      mbar_init(bars + 8 * (STAGES + s), CONSUMER_WARPS);    // empty: every consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (wgi == 0) {  // ---- producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (tid == 0) {
      for (int i = 0; i < 4; ++i) tma_acquire(map + 128 * i);
      const int main_items = stages_of(ksteps), dig_items = stages_of(dsteps);
      const int items = main_items + ndig * dig_items;
      for (int it = 0; it < items; ++it) {
        const int slot = it % STAGES;
        if (it >= STAGES) mbar_wait(bars + 8 * (STAGES + slot), ((it / STAGES) - 1) & 1);
        const unsigned full = bars + 8 * slot, dst = ring + slot * G::STAGE;
        int ma = 0, col = KBOX * it;
        if (it >= main_items) {  // digit digits - 1 - d of the correction: U, V^T
          const int d = (it - main_items) / dig_items, j = (it - main_items) % dig_items;
          ma = 2;
          col = (digits - 1 - d) * CW + KBOX * j;
        }
        mbar_expect_tx(full, G::STAGE);
        tma_load_2d(dst, map + 128 * ma, col, m0, full);
        tma_load_2d(dst + G::STAGE_A, map + 128 * (ma + 1), col, n0, full);
      }
    }
    return;
  }
  // ---- consumers
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  const int w = wgi - 1, q = (tid >> 5) & 3;
  unsigned acc[G::REGS];
#pragma unroll
  for (int v = 0; v < G::REGS; ++v) acc[v] = 0;
  unsigned msg[G::W];
#pragma unroll
  for (int i = 0; i < G::W; ++i) msg[i] = 0;
  if (w == 1 && TRANSCRIPT) bar_arrive(PP);  // consumer 0 issues first
  consume_range<G, BN, STAGES, TW, TRANSCRIPT>(acc, msg, ring, bars, 0, ksteps, TRANSCRIPT ? R / KSTEP : ksteps, w,
                                               lane, TRANSCRIPT);
  const int row0 = m0 + WG_M * w;
  if (TRANSCRIPT) {
    const int tw = owner_tile<G::T>(lane), tiles_n = N / TW;
    const int ti = (row0 + 16 * q) / TH, tj = n0 / TW + tw;
    if (ti < M / TH && tj < tiles_n) {
      int* out = msgs + ((long long)ti * tiles_n + tj) * WORDS + owner_sub<G::T>(lane) * G::W;
#pragma unroll
      for (int i = 0; i < G::W; ++i) out[i] = static_cast<int>(msg[i]);
    }
  }
  store_c<BN, false>(acc, c, M, N, row0, n0, q, lane);
  if (RECOVER && digits > 0) {
#pragma unroll
    for (int v = 0; v < G::REGS; ++v) acc[v] = 0;
    int item = stages_of(ksteps);
    for (int d = 0; d < digits; ++d, item += stages_of(dsteps)) {
#pragma unroll
      for (int v = 0; v < G::REGS; ++v) acc[v] <<= 7;
      consume_range<G, BN, STAGES, TW, false>(acc, msg, ring, bars, item, dsteps, dsteps, w, lane, false);
    }
    store_c<BN, true>(acc, c, M, N, row0, n0, q, lane);
  }
}
