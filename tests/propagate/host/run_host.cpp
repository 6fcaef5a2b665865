// Runs the propagate kernel for every photon of a slice, one "thread" after another.
#include "cuda_host.h"
#include KERNEL

extern "C" void run_host(
    const float* mat, const float* icdf, const float* surf, const int* geo_i,
    const double* geo_f, const float* gs, const unsigned long long* gs_ends,
    int n_gs, int face_ids, int n_surf, unsigned long long start, unsigned int count,
    unsigned long long seed, unsigned int event, int max_bounce, unsigned int hitmask,
    int development, float space_extent, float time_max, float eps, float4* hits,
    unsigned int* hit_count,
    unsigned int* fm_hist, float4* ox, short4* rx, unsigned long long* seq_out)
{
    blockDim.x = 1;
    for (unsigned int i = 0; i < count; ++i) {
        blockIdx.x = i;
        propagate(mat, icdf, surf, geo_i, geo_f, gs, gs_ends, n_gs, face_ids, n_surf, start,
                  count, seed, event, max_bounce, hitmask, development, space_extent, time_max,
                  eps, hits, hit_count, fm_hist, ox, rx, seq_out);
    }
}
