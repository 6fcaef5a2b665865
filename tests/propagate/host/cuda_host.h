// Host emulation of the few CUDA built-ins propagate.cu uses, so the kernel source itself
// can be compiled by g++ and run thread by thread on a CPU. This checks the kernel's
// logic (draw order, decisions, layouts) against the NumPy backend where no GPU is lent.
// Test support only; the real backend compiles the same file with nvcc via PyCUDA.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstddef>
#include <algorithm>

#define __device__
#define __global__
#define __forceinline__ inline

using std::isfinite;

struct float3 { float x, y, z; };
struct float4 { float x, y, z, w; };
struct uint4 { unsigned int x, y, z, w; };
struct short4 { short x, y, z, w; };
struct dim3 { unsigned int x, y, z; };

static dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1};

inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline short4 make_short4(short x, short y, short z, short w) { return {x, y, z, w}; }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
inline int __ffs(unsigned int x) { return __builtin_ffs((int)x); }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double f; std::memcpy(&f, &i, 8); return f; }
inline float __uint_as_float(unsigned int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { unsigned int o = *p; *p += v; return o; }
inline int min(int a, int b) { return a < b ? a : b; }
// one "thread" per call: a warp of one lane (lane 0)
inline unsigned int __activemask() { return 1u; }
inline unsigned int __match_any_sync(unsigned int mask, unsigned int) { return mask & 1u; }
inline unsigned int __ballot_sync(unsigned int mask, bool p) { return p ? (mask & 1u) : 0u; }
inline unsigned int __shfl_sync(unsigned int, unsigned int v, unsigned int) { return v; }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
