// Index maps of the sm_90a wgmma mining kernel (fused_wgmma.cu), shared with its host emulator (emulate.cpp), so
// the emulator runs exactly the addressing, descriptor and fold code the GPU runs. Builds on mma_fold.h (the fold
// steps are the mma.sync kernel's, so the transcript is bit-identical by construction of the same functions).
//
// Geometry. A CTA owns a BM x BN block of C (BM = 128): warpgroup 0 is the producer (one thread issues TMA loads
// into a ring of STAGES shared-memory stages), warpgroups 1 and 2 are consumers, consumer w owning rows 64w ..
// 64w + 63 of the block as one m64nBNk32 wgmma accumulator. A stage holds KBOX = 128 columns of k (the 128-byte
// swizzle width) of the block's BM rows of A and BN rows of B^T, both K-major, as TMA writes them with
// CU_TENSOR_MAP_SWIZZLE_128B: row r, byte b of a tile at sw128(128 r + b) from the tile's 1024-aligned base.
// A k step (32 columns, one wgmma) is sub-step s = step % 4 of its stage: the descriptors' start address moves by
// 32 s bytes inside the swizzle atom (the hardware applies the swizzle to the final address bits).
//
// Accumulator (PTX ISA, "wgmma .m64nNk32 register fragment D"): warp q (0..3) of the warpgroup holds rows
// 16q .. 16q + 15; its register v = 4i + j holds row 16q + g + 8(j >> 1), column 8i + 2t + (j & 1) (g = lane >> 2,
// t = lane & 3): per warp, a row of N/8 m16n8 tiles with mma.sync's C layout. So the fold of a warp is the
// mma.sync kernel's fold with MI = 1, NI = N/8, WN = N and TH = 16: protocol tiles 16 x TW, T = N / TW tiles per
// warp (2 <= T <= 32), tile_of_mma, LaneFold and msg_update of mma_fold.h.
#pragma once

#include "mma_fold.h"

namespace pouw {
namespace wg {

constexpr int BM = 128;                    // rows of C per CTA: two consumer warpgroups x 64
constexpr int WG_M = 64;                   // rows per consumer warpgroup (the wgmma M)
constexpr int TH = 16;                     // protocol tile height: one warp's rows
constexpr int KBOX = 128;                  // k columns (bytes) per stage: the 128-byte swizzle width
constexpr int SUBSTEPS = KBOX / KSTEP;     // k steps per stage
constexpr int ATOM = 1024;                 // 8 rows x 128 bytes: one swizzle atom, the descriptors' SBO

// ---- wgmma shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format"): start address >> 4 in bits
// 0..13, leading byte offset >> 4 in 16..29 (unused for swizzled K-major), stride byte offset >> 4 in 32..45 (one
// 8-row atom: 1024), base offset 0 (tiles 1024-aligned), layout type in 62..63 (1: 128-byte swizzle)
POUW_HD unsigned long long smem_desc(unsigned addr) {
  return static_cast<unsigned long long>((addr & 0x3FFFF) >> 4) | (1ull << 16) |
         (static_cast<unsigned long long>(ATOM >> 4) << 32) | (1ull << 62);
}
// shared address of k step `sub` of an operand whose tile starts at `tile` (1024-aligned), rows from row0 (a
// multiple of 8)
POUW_HD unsigned operand_addr(unsigned tile, int row0, int sub) { return tile + row0 * KBOX + sub * KSTEP; }

// ---- accumulator register v of lane `lane` in warp q of a consumer warpgroup: row and column in its 64 x N tile
POUW_HD int d_row(int q, int lane, int v) { return 16 * q + c_row(lane, v & 3); }
POUW_HD int d_col(int lane, int v) { return 8 * (v >> 2) + c_col(lane, v & 3); }
// warp-local protocol tile of register v (tiles 16 x TW along the warp's row of N/8 mma tiles)
template <int BN, int TW>
POUW_HD int tile_of_reg(int v) { return tile_of_mma<BN, TH, TW>(0, v >> 2); }

// ---- the pipeline's item sequence (the producer loads items in this order; the consumers use them in it):
// items 0 .. ksteps(K) - 1 are the main GEMM's stages, then for digit i = digits - 1 .. 0 the correction's stages
POUW_HD int stages_of(int steps) { return (steps + SUBSTEPS - 1) / SUBSTEPS; }

// ---- the consumers' wait points in a range of `steps` k steps with chunks of `chunk_steps` (fold) steps: after
// step s the warpgroup commits its wgmma group when s ends a chunk, a stage or the range; it waits for all
// groups (0) at a chunk's or the range's end, else (stage end) for all but the newest (1). Items (stages)
// whose wgmmas are then known complete may be released to the producer: this many of the range's.
POUW_HD bool commits_after(int s, int steps, int chunk_steps) {
  return s + 1 == steps || (s + 1) % chunk_steps == 0 || (s + 1) % SUBSTEPS == 0;
}
POUW_HD bool full_wait_after(int s, int steps, int chunk_steps) {
  return s + 1 == steps || (s + 1) % chunk_steps == 0;
}
POUW_HD int released_after(int s, int steps, int chunk_steps) {
  if (s + 1 == steps) return stages_of(steps);
  const int whole = (s + 1) / SUBSTEPS;  // stages whose last step is <= s
  return full_wait_after(s, steps, chunk_steps) ? whole : (whole > 0 ? whole - 1 : 0);
}

}  // namespace wg
}  // namespace pouw
