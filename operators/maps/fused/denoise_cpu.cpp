// K denoising forward-backward steps (51) on packed wavelet coefficients, one pass per group.
//
//   φ(u) = prox_{τ‖·‖₁,₂}(u ⊙ scale + shift),  scale = 1 − τ/θ²,  shift = (τ/θ) ⊙ Dy
//
// Every group of ‖·‖₁,₂ (the three bands cH, cV, cD of one level at one position, per channel
// for θ_B, over all channels for θ_BC; each approximation coefficient alone) evolves
// independently of all others over the K steps, so K steps of a group are K steps of the whole
// iterate restricted to that group: a tile of groups is loaded once, iterated K times in
// registers (or cache), and stored once; T blocks of K steps likewise run in one pass, with the
// squared residual of every block summed per sample on the way. The arithmetic is that of
// WaveletFB._prox, operation for operation and in the same order (v = shift + u·scale; n = ((ΣcH² + ΣcV²) + ΣcD²) summed over channels
// in channel order for θ_BC; f = relu(1 − τ·(1/√max(n, tiny))); φ = v·f), so the iterates
// equal the eager step's bit for bit: v is one fused multiply-add where the CPU has FMA (as
// ATen's vectorised addcmul computes it there), every other operation rounds on its own
// (-ffp-contract=off).
//
// The VJP of the K steps recomputes the K states of each tile from u₀ (exact: the groups are
// independent) and applies the closed-form VJP of group soft thresholding backwards:
//   ∂φ/∂v ᵀ g = f·g + τ·n^{-3/2}·(g·v)·v  where f > 0, else 0.
// Threads (ATen's parallel_for) split the work by rows of one level; the batch loop is inside
// an item, so the batch sums of ∂/∂scale are taken in a fixed order (deterministic).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

constexpr int64_t TILE = 64;

struct Geometry {
  int64_t B, C, H, W, levels;
  bool bc;  // θ_BC: one group over all channels; θ_B: one group per channel
};

// One work item: a row of the detail bands of one level (level >= 0), or a row of the
// approximation block (level == -1).
struct Item {
  int64_t level, row;
};

std::vector<Item> items_of(const Geometry& g) {
  std::vector<Item> items;
  for (int64_t j = 0; j < g.levels; ++j) {
    const int64_t h = g.H >> (j + 1);
    for (int64_t r = 0; r < h; ++r) items.push_back({j, r});
  }
  for (int64_t r = 0; r < (g.H >> g.levels); ++r) items.push_back({-1, r});
  // Interleave the levels by relative row position, so that any contiguous range of items (a
  // thread's share in at::parallel_for) holds the same fraction of every level: balanced work.
  auto position = [&](const Item& it) {
    const int64_t rows = it.level < 0 ? (g.H >> g.levels) : (g.H >> (it.level + 1));
    return (double(it.row) + 0.5) / double(rows);
  };
  std::stable_sort(items.begin(), items.end(),
                   [&](const Item& a, const Item& b) { return position(a) < position(b); });
  return items;
}

// Items per task of at::parallel_for: enough work (about 2^15 coefficient-steps) that a small
// problem runs on one thread instead of paying for a parallel region.
inline int64_t grain(const Geometry& g, int64_t n_items, int64_t K) {
  const int64_t work = g.B * g.C * g.H * g.W * K;
  const int64_t per_item = std::max<int64_t>(1, work / std::max<int64_t>(1, n_items));
  return std::max<int64_t>(1, (int64_t(1) << 15) / per_item);
}

// Offsets (within one (b, c) image of H×W) of the three bands of a detail row, or of the
// approximation row (band 0 only).
inline void band_offsets(const Geometry& g, const Item& it, int64_t off[3], int64_t& width) {
  if (it.level < 0) {
    width = g.W >> g.levels;
    off[0] = it.row * g.W;
    return;
  }
  const int64_t h = g.H >> (it.level + 1), w = g.W >> (it.level + 1);
  width = w;
  off[0] = (h + it.row) * g.W;      // cH: rows [h, 2h), cols [0, w)
  off[1] = it.row * g.W + w;        // cV: rows [0, h), cols [w, 2w)
  off[2] = (h + it.row) * g.W + w;  // cD: rows [h, 2h), cols [w, 2w)
}

// One step on a tile: U (nb bands × C channels × TILE) in place; the factor of each group.
// Layout of U, S, SH: index ((c * nb) + k) * TILE + i.
// v = shift + u·scale with addcmul's rounding: one FMA where the target has it.
template <typename T>
inline T affine(T u, T s, T sh) {
#ifdef __FMA__
  return std::fma(u, s, sh);
#else
  return sh + u * s;
#endif
}

template <typename T>
inline void step_tile(const Geometry& g, int64_t nb, int64_t n, T* U, const T* S, const T* SH,
                      T tau, T tiny, T* NS, T* F) {
  const int64_t C = g.C;
  // v = shift + u·scale (addcmul's order)
  for (int64_t q = 0; q < C * nb; ++q) {
    T* u = U + q * TILE;
    const T* s = S + q * TILE;
    const T* sh = SH + q * TILE;
    for (int64_t i = 0; i < n; ++i) u[i] = affine(u[i], s[i], sh[i]);
  }
  if (nb == 1) return;  // approximation: factor 1
  const int64_t groups = g.bc ? 1 : C;
  const int64_t per = g.bc ? C : 1;  // channels in one group
  for (int64_t gi = 0; gi < groups; ++gi) {
    T* ns = NS + gi * TILE;
    T* f = F + gi * TILE;
    // n = (Σ_c cH² + Σ_c cV²) + Σ_c cD²
    T band[3][TILE];
    for (int64_t k = 0; k < 3; ++k) {
      const T* v0 = U + ((gi * per) * nb + k) * TILE;
      for (int64_t i = 0; i < n; ++i) band[k][i] = v0[i] * v0[i];
      for (int64_t c = 1; c < per; ++c) {
        const T* v = U + (((gi * per) + c) * nb + k) * TILE;
        for (int64_t i = 0; i < n; ++i) band[k][i] = band[k][i] + v[i] * v[i];
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      T s = (band[0][i] + band[1][i]) + band[2][i];
      s = s < tiny ? tiny : s;  // clamp_min(tiny), NaN passes
      ns[i] = s;
      T r = T(1) / std::sqrt(s);
      T fi = T(1) - tau * r;
      f[i] = fi < T(0) ? T(0) : fi;  // relu, NaN passes
    }
    for (int64_t c = 0; c < per; ++c)
      for (int64_t k = 0; k < 3; ++k) {
        T* v = U + (((gi * per) + c) * nb + k) * TILE;
        for (int64_t i = 0; i < n; ++i) v[i] = v[i] * f[i];
      }
  }
}

// One step (51) on the V lanes of one group of PER channels held in registers: the operations
// of step_tile, in its order.
template <typename T, int PER, int64_t V = 64 / sizeof(T)>
inline void step_regs(T (&u)[PER][3][V], const T (&s)[PER][3][V], const T (&sh)[PER][3][V], T tau,
                      T tiny) {
  for (int64_t c = 0; c < PER; ++c)
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t l = 0; l < V; ++l) u[c][b][l] = affine(u[c][b][l], s[c][b][l], sh[c][b][l]);
  T f[V];
  for (int64_t l = 0; l < V; ++l) {
    T band[3];
    for (int64_t b = 0; b < 3; ++b) {
      band[b] = u[0][b][l] * u[0][b][l];
      for (int64_t c = 1; c < PER; ++c) band[b] = band[b] + u[c][b][l] * u[c][b][l];
    }
    T sq = (band[0] + band[1]) + band[2];
    sq = sq < tiny ? tiny : sq;  // clamp_min(tiny), NaN passes
    const T fi = T(1) - tau * (T(1) / std::sqrt(sq));
    f[l] = fi < T(0) ? T(0) : fi;  // relu, NaN passes
  }
  for (int64_t c = 0; c < PER; ++c)
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t l = 0; l < V; ++l) u[c][b][l] = u[c][b][l] * f[l];
}

// K steps of a tile with the state in registers, one chunk of V lanes (one 64-byte vector) at
// a time: the groups of a detail row hold PER channels each (θ_B: PER = 1, a group per channel;
// θ_BC with C = PER: one group), and the approximation row (nb == 1) only has the affine map.
// The operations and their order are those of step_tile (so the iterates are equal bit for
// bit); what changes is that u, scale and shift are loaded once for the K steps instead of
// being read and written back at every step. Lanes past n compute on stale tile data and are
// never stored.
template <typename T, int PER>
inline void steps_tile(const Geometry& g, int64_t nb, int64_t n, T* U, const T* S, const T* SH,
                       T tau, T tiny, int64_t K) {
  constexpr int64_t V = 64 / sizeof(T);
  static_assert(TILE % V == 0, "a tile holds whole vectors");
  if (nb == 1) {
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t i0 = 0; i0 < n; i0 += V) {
        T u[V], s[V], sh[V];
        const int64_t o = c * TILE + i0;
        for (int64_t l = 0; l < V; ++l) u[l] = U[o + l], s[l] = S[o + l], sh[l] = SH[o + l];
        for (int64_t k = 0; k < K; ++k)
          for (int64_t l = 0; l < V; ++l) u[l] = affine(u[l], s[l], sh[l]);
        for (int64_t l = 0; l < V; ++l) U[o + l] = u[l];
      }
    return;
  }
  const int64_t groups = g.C / PER;
  for (int64_t gi = 0; gi < groups; ++gi)
    for (int64_t i0 = 0; i0 < n; i0 += V) {
      T u[PER][3][V], s[PER][3][V], sh[PER][3][V];
      for (int64_t c = 0; c < PER; ++c)
        for (int64_t b = 0; b < 3; ++b) {
          const int64_t o = (((gi * PER) + c) * 3 + b) * TILE + i0;
          for (int64_t l = 0; l < V; ++l)
            u[c][b][l] = U[o + l], s[c][b][l] = S[o + l], sh[c][b][l] = SH[o + l];
        }
      for (int64_t k = 0; k < K; ++k) step_regs<T, PER>(u, s, sh, tau, tiny);
      for (int64_t c = 0; c < PER; ++c)
        for (int64_t b = 0; b < 3; ++b) {
          const int64_t o = (((gi * PER) + c) * 3 + b) * TILE + i0;
          for (int64_t l = 0; l < V; ++l) U[o + l] = u[c][b][l];
        }
    }
}

// K steps of a tile: in registers for the common group sizes (one channel, or three for θ_BC
// on colour images), else step by step through the tile (step_tile; same iterates).
template <typename T>
inline void k_steps(const Geometry& g, int64_t nb, int64_t n, T* U, const T* S, const T* SH,
                    T tau, T tiny, int64_t K, T* NS, T* F) {
  const int64_t per = g.bc ? g.C : 1;
  if (nb == 1 || per == 1) return steps_tile<T, 1>(g, nb, n, U, S, SH, tau, tiny, K);
  if (per == 3) return steps_tile<T, 3>(g, nb, n, U, S, SH, tau, tiny, K);
  for (int64_t k = 0; k < K; ++k) step_tile<T>(g, nb, n, U, S, SH, tau, tiny, NS, F);
}

template <typename T>
struct Tile {
  std::vector<T> U, U0, S, SH, NS, F;
  explicit Tile(const Geometry& g)
      : U(3 * g.C * TILE), U0(3 * g.C * TILE), S(3 * g.C * TILE), SH(3 * g.C * TILE),
        NS(g.C * TILE), F(g.C * TILE) {}
};

// Copy a tile between the packed tensor (image (b, ·)) and the tile layout.
template <typename T, bool Load>
inline void move_tile(const Geometry& g, int64_t nb, const int64_t off[3], int64_t c0, int64_t n,
                      T* packed_b, int64_t cstride, T* tile) {
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t k = 0; k < nb; ++k) {
      T* p = packed_b + c * cstride + off[k] + c0;
      T* t = tile + (c * nb + k) * TILE;
      if (Load)
        std::copy(p, p + n, t);
      else
        std::copy(t, t + n, p);
    }
}

// T blocks of K steps in one pass: out = u_{KT}, prev = u_{K(T−1)} (not written when T == 1),
// partial[(t · items + item) · B + b] = Σ (u_{K(t+1)} − u_{Kt})² over the item's coefficients of
// sample b, accumulated in float64 in a fixed order.
template <typename T>
void block_impl(const Geometry& g, const std::vector<Item>& items, const T* u0, const T* scale,
                const T* shift, T tau, int64_t K, int64_t T_blocks, T* out, T* prev,
                double* partial) {
  const int64_t n_items = (int64_t)items.size();
  const int64_t HW = g.H * g.W, cstride = HW, bstride = g.C * HW;
  const T tiny = std::numeric_limits<T>::min();
  at::parallel_for(0, n_items, grain(g, n_items, K * T_blocks), [&](int64_t begin, int64_t end) {
    Tile<T> t(g);
    // per-lane sums (the lanes add independently, so the loop vectorises), added up in lane
    // order at the end of each sample: a fixed order, whatever the threads
    std::vector<double> lanes(T_blocks * TILE);
    for (int64_t idx = begin; idx < end; ++idx) {
      const Item it = items[idx];
      int64_t off[3], width;
      band_offsets(g, it, off, width);
      const int64_t nb = it.level < 0 ? 1 : 3;
      for (int64_t b = 0; b < g.B; ++b) {
        std::fill(lanes.begin(), lanes.end(), 0.0);
        for (int64_t c0 = 0; c0 < width; c0 += TILE) {
          const int64_t n = std::min(TILE, width - c0);
          move_tile<T, true>(g, nb, off, c0, n, const_cast<T*>(u0) + b * bstride, cstride,
                             t.U.data());
          move_tile<T, true>(g, nb, off, c0, n, const_cast<T*>(scale), cstride, t.S.data());
          move_tile<T, true>(g, nb, off, c0, n, const_cast<T*>(shift) + b * bstride, cstride,
                             t.SH.data());
          for (int64_t tb = 0; tb < T_blocks; ++tb) {
            std::copy(t.U.begin(), t.U.end(), t.U0.begin());
            k_steps<T>(g, nb, n, t.U.data(), t.S.data(), t.SH.data(), tau, tiny, K, t.NS.data(),
                       t.F.data());
            double* a = lanes.data() + tb * TILE;
            for (int64_t q = 0; q < g.C * nb; ++q)
              for (int64_t i = 0; i < n; ++i) {
                const double d = (double)t.U[q * TILE + i] - (double)t.U0[q * TILE + i];
                a[i] += d * d;
              }
          }
          move_tile<T, false>(g, nb, off, c0, n, out + b * bstride, cstride, t.U.data());
          if (T_blocks > 1)
            move_tile<T, false>(g, nb, off, c0, n, prev + b * bstride, cstride, t.U0.data());
        }
        for (int64_t tb = 0; tb < T_blocks; ++tb) {
          double sum = 0.0;
          for (int64_t i = 0; i < TILE; ++i) sum += lanes[tb * TILE + i];
          partial[(tb * n_items + idx) * g.B + b] = sum;
        }
      }
    }
  });
}

// The VJP of K steps of a tile, V lanes of one group at a time with everything in registers or
// a small stack buffer: the K states of the chunk are recomputed from U (u₀) by step_regs, then
// the backward runs over them; the operations and their order are those of the tile-wide code
// in vjp_impl, element by element (so the two give the same bits). G holds ∂/∂u_K on entry and
// ∂/∂u₀ on exit; GS accumulates ∂/∂scale (over the batch, in the caller's order); GSH receives
// ∂/∂shift.
template <typename T, int PER>
inline void vjp_tile(const Geometry& g, int64_t nb, int64_t n, const T* U, const T* S,
                     const T* SH, T* G, T* GS, T* GSH, T tau, T tiny, int64_t K, T* st) {
  constexpr int64_t V = 64 / sizeof(T);
  if (nb == 1) {  // approximation: φ is affine, ∂/∂v = ∂/∂φ
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t i0 = 0; i0 < n; i0 += V) {
        const int64_t o = c * TILE + i0;
        T u[V], s[V], sh[V], gg[V], gs[V], gsh[V];
        for (int64_t l = 0; l < V; ++l)
          u[l] = U[o + l], s[l] = S[o + l], sh[l] = SH[o + l], gg[l] = G[o + l],
          gs[l] = GS[o + l], gsh[l] = T(0);
        for (int64_t k = 0; k < K; ++k) {
          for (int64_t l = 0; l < V; ++l) st[k * V + l] = u[l];
          for (int64_t l = 0; l < V; ++l) u[l] = affine(u[l], s[l], sh[l]);
        }
        for (int64_t k = K - 1; k >= 0; --k)
          for (int64_t l = 0; l < V; ++l) {
            gsh[l] += gg[l];
            gs[l] += gg[l] * st[k * V + l];
            gg[l] = gg[l] * s[l];
          }
        for (int64_t l = 0; l < V; ++l) G[o + l] = gg[l], GS[o + l] = gs[l], GSH[o + l] = gsh[l];
      }
    return;
  }
  constexpr int64_t M = PER * 3 * V;  // one state of the chunk
  const int64_t groups = g.C / PER;
  for (int64_t gi = 0; gi < groups; ++gi)
    for (int64_t i0 = 0; i0 < n; i0 += V) {
      T u[PER][3][V], s[PER][3][V], sh[PER][3][V], gg[PER][3][V];
      for (int64_t c = 0; c < PER; ++c)
        for (int64_t b = 0; b < 3; ++b) {
          const int64_t o = (((gi * PER) + c) * 3 + b) * TILE + i0;
          for (int64_t l = 0; l < V; ++l)
            u[c][b][l] = U[o + l], s[c][b][l] = S[o + l], sh[c][b][l] = SH[o + l],
            gg[c][b][l] = G[o + l];
        }
      for (int64_t k = 0; k < K; ++k) {
        std::copy(&u[0][0][0], &u[0][0][0] + M, st + k * M);
        if (k + 1 < K) step_regs<T, PER>(u, s, sh, tau, tiny);
      }
      T gs[PER][3][V], gsh[PER][3][V];
      for (int64_t c = 0; c < PER; ++c)
        for (int64_t b = 0; b < 3; ++b) {
          const int64_t o = (((gi * PER) + c) * 3 + b) * TILE + i0;
          for (int64_t l = 0; l < V; ++l) gs[c][b][l] = GS[o + l], gsh[c][b][l] = T(0);
        }
      for (int64_t k = K - 1; k >= 0; --k) {
        const T (*uk)[3][V] = reinterpret_cast<const T (*)[3][V]>(st + k * M);
        T v[PER][3][V];
        for (int64_t c = 0; c < PER; ++c)
          for (int64_t b = 0; b < 3; ++b)
            for (int64_t l = 0; l < V; ++l)
              v[c][b][l] = affine(uk[c][b][l], s[c][b][l], sh[c][b][l]);
        T f[V], coef[V];
        for (int64_t l = 0; l < V; ++l) {
          T band[3];
          for (int64_t b = 0; b < 3; ++b) {
            band[b] = T(0);
            for (int64_t c = 0; c < PER; ++c) band[b] = band[b] + v[c][b][l] * v[c][b][l];
          }
          T dot = T(0);
          for (int64_t c = 0; c < PER; ++c)
            for (int64_t b = 0; b < 3; ++b) dot += gg[c][b][l] * v[c][b][l];
          T sq = (band[0] + band[1]) + band[2];
          const bool live = sq >= tiny;  // clamp_min passes the gradient there only
          sq = sq < tiny ? tiny : sq;
          const T r = T(1) / std::sqrt(sq);
          const T fi = T(1) - tau * r;
          const bool on = fi > T(0);
          const T cl = tau * r * r * r * dot;
          const T c_live = live ? cl : T(0);
          f[l] = on ? fi : T(0);
          coef[l] = on ? c_live : T(0);
        }
        for (int64_t c = 0; c < PER; ++c)
          for (int64_t b = 0; b < 3; ++b)
            for (int64_t l = 0; l < V; ++l) {
              const T gv = f[l] * gg[c][b][l] + coef[l] * v[c][b][l];  // ∂/∂v
              gsh[c][b][l] += gv;
              gs[c][b][l] += gv * uk[c][b][l];
              gg[c][b][l] = gv * s[c][b][l];
            }
      }
      for (int64_t c = 0; c < PER; ++c)
        for (int64_t b = 0; b < 3; ++b) {
          const int64_t o = (((gi * PER) + c) * 3 + b) * TILE + i0;
          for (int64_t l = 0; l < V; ++l)
            G[o + l] = gg[c][b][l], GS[o + l] = gs[c][b][l], GSH[o + l] = gsh[c][b][l];
        }
    }
}

template <typename T>
void vjp_impl(const Geometry& g, const T* u0, const T* scale, const T* shift, T tau, int64_t K,
              const T* grad_uK, T* grad_u0, T* grad_scale, T* grad_shift) {
  const auto items = items_of(g);
  const int64_t HW = g.H * g.W, cstride = HW, bstride = g.C * HW;
  const T tiny = std::numeric_limits<T>::min();
  const int64_t Q = 3 * g.C * TILE;
  at::parallel_for(0, (int64_t)items.size(), grain(g, items.size(), 2 * K), [&](int64_t begin, int64_t end) {
    Tile<T> t(g);
    std::vector<T> states(K * Q), G(Q), GS(Q), GSH(Q);
    const int64_t groups = g.bc ? 1 : g.C, per = g.bc ? g.C : 1;
    for (int64_t idx = begin; idx < end; ++idx) {
      const Item it = items[idx];
      int64_t off[3], width;
      band_offsets(g, it, off, width);
      const int64_t nb = it.level < 0 ? 1 : 3;
      for (int64_t c0 = 0; c0 < width; c0 += TILE) {
        const int64_t n = std::min(TILE, width - c0);
        move_tile<T, true>(g, nb, off, c0, n, const_cast<T*>(scale), cstride, t.S.data());
        std::fill(GS.begin(), GS.end(), T(0));
        for (int64_t b = 0; b < g.B; ++b) {
          move_tile<T, true>(g, nb, off, c0, n, const_cast<T*>(u0) + b * bstride, cstride,
                             t.U.data());
          move_tile<T, true>(g, nb, off, c0, n, const_cast<T*>(shift) + b * bstride, cstride,
                             t.SH.data());
          move_tile<T, true>(g, nb, off, c0, n, const_cast<T*>(grad_uK) + b * bstride, cstride,
                             G.data());
          if (nb == 1 || per == 1) {
            vjp_tile<T, 1>(g, nb, n, t.U.data(), t.S.data(), t.SH.data(), G.data(), GS.data(),
                           GSH.data(), tau, tiny, K, states.data());
          } else if (per == 3) {
            vjp_tile<T, 3>(g, nb, n, t.U.data(), t.S.data(), t.SH.data(), G.data(), GS.data(),
                           GSH.data(), tau, tiny, K, states.data());
          } else {  // other θ_BC group sizes: tile-wide passes, step by step
            for (int64_t k = 0; k < K; ++k) {
              std::copy(t.U.begin(), t.U.end(), states.begin() + k * Q);
              if (k + 1 < K)
                k_steps<T>(g, nb, n, t.U.data(), t.S.data(), t.SH.data(), tau, tiny, 1,
                           t.NS.data(), t.F.data());
            }
            std::fill(GSH.begin(), GSH.end(), T(0));
            for (int64_t k = K - 1; k >= 0; --k) {
              const T* uk = states.data() + k * Q;
              // v = shift + u·scale, kept in U
              for (int64_t q = 0; q < g.C * nb; ++q)
                for (int64_t i = 0; i < n; ++i)
                  t.U[q * TILE + i] =
                      affine(uk[q * TILE + i], t.S[q * TILE + i], t.SH[q * TILE + i]);
              if (nb == 3) {
                for (int64_t gi = 0; gi < groups; ++gi) {
                  T band[3][TILE], dot[TILE];
                  for (int64_t kk = 0; kk < 3; ++kk) {
                    for (int64_t i = 0; i < n; ++i) band[kk][i] = T(0);
                    for (int64_t c = 0; c < per; ++c) {
                      const T* v = t.U.data() + (((gi * per) + c) * nb + kk) * TILE;
                      for (int64_t i = 0; i < n; ++i) band[kk][i] = band[kk][i] + v[i] * v[i];
                    }
                  }
                  for (int64_t i = 0; i < n; ++i) dot[i] = T(0);
                  for (int64_t c = 0; c < per; ++c)
                    for (int64_t kk = 0; kk < 3; ++kk) {
                      const int64_t q = (((gi * per) + c) * nb + kk) * TILE;
                      for (int64_t i = 0; i < n; ++i) dot[i] += G[q + i] * t.U[q + i];
                    }
                  T f[TILE], coef[TILE];
                  for (int64_t i = 0; i < n; ++i) {
                    T s = (band[0][i] + band[1][i]) + band[2][i];
                    const bool live = s >= tiny;  // clamp_min passes the gradient there only
                    s = s < tiny ? tiny : s;
                    const T r = T(1) / std::sqrt(s);
                    const T fi = T(1) - tau * r;
                    const bool on = fi > T(0);
                    // selects, not a branch on (on && live): the loop vectorises
                    const T c = tau * r * r * r * dot[i];
                    const T c_live = live ? c : T(0);
                    f[i] = on ? fi : T(0);
                    coef[i] = on ? c_live : T(0);
                  }
                  for (int64_t c = 0; c < per; ++c)
                    for (int64_t kk = 0; kk < 3; ++kk) {
                      const int64_t q = (((gi * per) + c) * nb + kk) * TILE;
                      for (int64_t i = 0; i < n; ++i)
                        G[q + i] = f[i] * G[q + i] + coef[i] * t.U[q + i];
                    }
                }
              }
              // G is now ∂/∂v; ∂/∂shift += G, ∂/∂scale += G·u_k, ∂/∂u_k = G·scale
              for (int64_t q = 0; q < g.C * nb; ++q)
                for (int64_t i = 0; i < n; ++i) {
                  const int64_t p = q * TILE + i;
                  GSH[p] += G[p];
                  GS[p] += G[p] * uk[p];
                  G[p] = G[p] * t.S[p];
                }
            }
          }
          move_tile<T, false>(g, nb, off, c0, n, grad_shift + b * bstride, cstride, GSH.data());
          if (grad_u0 != nullptr)
            move_tile<T, false>(g, nb, off, c0, n, grad_u0 + b * bstride, cstride, G.data());
        }
        move_tile<T, false>(g, nb, off, c0, n, grad_scale, cstride, GS.data());
      }
    }
  });
}

Geometry geometry(const torch::Tensor& u0, const torch::Tensor& scale, const torch::Tensor& shift,
                  const std::string& prior, int64_t levels) {
  TORCH_CHECK(u0.dim() == 4, "u0 must be (B, C, H, W)");
  TORCH_CHECK(u0.device().is_cpu(), "the C++ kernel runs on CPU tensors");
  TORCH_CHECK(u0.is_contiguous() && scale.is_contiguous() && shift.is_contiguous(),
              "u0, scale and shift must be contiguous");
  TORCH_CHECK(scale.dtype() == u0.dtype() && shift.dtype() == u0.dtype(), "dtypes differ");
  const int64_t B = u0.size(0), C = u0.size(1), H = u0.size(2), W = u0.size(3);
  TORCH_CHECK(scale.dim() == 4 && scale.size(0) == 1 && scale.size(1) == C && scale.size(2) == H &&
                  scale.size(3) == W,
              "scale must be (1, C, H, W)");
  TORCH_CHECK(shift.sizes() == u0.sizes(), "shift must have u0's shape");
  TORCH_CHECK(prior == "B" || prior == "BC", "prior must be 'B' or 'BC'");
  TORCH_CHECK(levels >= 1 && H % (int64_t(1) << levels) == 0 && W % (int64_t(1) << levels) == 0,
              "H and W must be multiples of 2^levels");
  return Geometry{B, C, H, W, levels, prior == "BC"};
}

// T blocks of K steps: {u_KT, u_K(T−1) (u0 itself when T == 1), res_sq (T, B)}, res_sq[t] the
// squared residual Σ (u_K(t+1) − u_Kt)² of block t per sample, in u's dtype.
std::vector<torch::Tensor> denoise_blocks(const torch::Tensor& u0, const torch::Tensor& scale,
                                          const torch::Tensor& shift, double tau,
                                          const std::string& prior, int64_t levels, int64_t K,
                                          int64_t T) {
  const Geometry g = geometry(u0, scale, shift, prior, levels);
  TORCH_CHECK(K >= 1, "K must be >= 1");
  TORCH_CHECK(T >= 1, "T must be >= 1");
  auto out = torch::empty_like(u0);
  auto prev = T > 1 ? torch::empty_like(u0) : u0;
  const auto items = items_of(g);
  const int64_t n_items = (int64_t)items.size();
  auto partial = torch::empty({T, n_items, g.B}, u0.options().dtype(torch::kFloat64));
  AT_DISPATCH_FLOATING_TYPES(u0.scalar_type(), "denoise_blocks", [&] {
    block_impl<scalar_t>(g, items, u0.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(),
                         shift.data_ptr<scalar_t>(), (scalar_t)tau, K, T, out.data_ptr<scalar_t>(),
                         prev.data_ptr<scalar_t>(), partial.data_ptr<double>());
  });
  return {out, prev, partial.sum(1).to(u0.scalar_type())};
}

// One block of K steps: {u_K, res_sq (B,)}.
std::vector<torch::Tensor> denoise_block(const torch::Tensor& u0, const torch::Tensor& scale,
                                         const torch::Tensor& shift, double tau,
                                         const std::string& prior, int64_t levels, int64_t K) {
  auto r = denoise_blocks(u0, scale, shift, tau, prior, levels, K, 1);
  return {r[0], r[2][0]};
}

std::vector<torch::Tensor> denoise_block_vjp(const torch::Tensor& u0, const torch::Tensor& scale,
                                             const torch::Tensor& shift, double tau,
                                             const std::string& prior, int64_t levels, int64_t K,
                                             const torch::Tensor& grad_uK, bool need_u0) {
  const Geometry g = geometry(u0, scale, shift, prior, levels);
  TORCH_CHECK(K >= 1, "K must be >= 1");
  TORCH_CHECK(grad_uK.sizes() == u0.sizes() && grad_uK.is_contiguous() &&
                  grad_uK.dtype() == u0.dtype(),
              "grad_uK must be contiguous, with u0's shape and dtype");
  auto grad_scale = torch::empty_like(scale);
  auto grad_shift = torch::empty_like(shift);
  torch::Tensor grad_u0 = need_u0 ? torch::empty_like(u0) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(u0.scalar_type(), "denoise_block_vjp", [&] {
    vjp_impl<scalar_t>(g, u0.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(),
                       shift.data_ptr<scalar_t>(), (scalar_t)tau, K, grad_uK.data_ptr<scalar_t>(),
                       need_u0 ? grad_u0.data_ptr<scalar_t>() : nullptr,
                       grad_scale.data_ptr<scalar_t>(), grad_shift.data_ptr<scalar_t>());
  });
  if (need_u0) return {grad_scale, grad_shift, grad_u0};
  return {grad_scale, grad_shift};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("denoise_block", &denoise_block, "K denoising FB steps on packed wavelet coefficients");
  m.def("denoise_blocks", &denoise_blocks, "T blocks of K denoising FB steps in one pass");
  m.def("denoise_block_vjp", &denoise_block_vjp, "VJP of denoise_block");
}
