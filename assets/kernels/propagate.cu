// skydeck optical-photon propagation kernel, compiled by PyCUDA at run time.
//
// One thread per photon. This file mirrors engine/propagate/numpy_backend.py line by line:
// the same Philox4x32-10 keying (key = seed, counter = (photon lo, photon hi, block, event)),
// the same draw blocks for the same decisions, the same float32 arithmetic order. Compile
// with --fmad=false so a*b+c is not contracted into an FMA the NumPy side cannot do.
//
// Photon layout (docs/design.md, "Photon layout"):
// q0 pos.xyz,t  q1 dir.xyz,weight  q2 pol.xyz,wavelength
// q3 (uint) boundary<<16|flag, sensor, photon index, flagmask. Flag bits: Opticks 2019.
//
// Constants WL_MIN, WL_STEP, WL_N, N_PROP, ICDF_N, TORCH_BLOCKS, SCINT_BLOCKS, MAX_CK_TRIES
// come from -D options (engine/propagate/kernel.py compile_options), so they are the NumPy
// side's own values.
//
// Photon generation (engine/propagate/generate/): one device function per genstep kind,
// chosen by the gentype in a switch (Opticks' qsim::generate_photon): TORCH (6), CERENKOV
// (15, 18, 1: qcerenkov::generate), SCINTILLATION (16, 5, 2: qscint::generate). Each says
// how many Philox blocks it used; the photon's steps draw from the next block on. Time
// advances with the material's group velocity (GROUPVEL row of the material table).

#ifndef WL_MIN
#define WL_MIN 60.0f
#endif
#ifndef WL_STEP
#define WL_STEP 1.0f
#endif
#ifndef WL_N
#define WL_N 761
#endif
#ifndef N_PROP
#define N_PROP 5
#endif
#ifndef ICDF_N
#define ICDF_N 4096
#endif
#ifndef TORCH_BLOCKS
#define TORCH_BLOCKS 2
#endif
#ifndef SCINT_BLOCKS
#define SCINT_BLOCKS 2
#endif
#ifndef MAX_CK_TRIES
#define MAX_CK_TRIES 100
#endif

#define F_CK (1u << 0)
#define F_SI (1u << 1)
#define F_MI (1u << 2)
#define F_AB (1u << 3)
#define F_RE (1u << 4)
#define F_SC (1u << 5)
#define F_SD (1u << 6)
#define F_SA (1u << 7)
#define F_DR (1u << 8)
#define F_SR (1u << 9)
#define F_BR (1u << 10)
#define F_BT (1u << 11)
#define F_TO (1u << 12)

#define EPS 1e-3f
#define TWO_PI 6.2831855f
#define MAX_TRIES 1024
#define INF __int_as_float(0x7f800000)

// ------------------------------------------------------------------ Philox4x32-10
#define PH_M0 0xD2511F53u
#define PH_M1 0xCD9E8D57u
#define PH_W0 0x9E3779B9u
#define PH_W1 0xBB67AE85u

struct Rng {
    unsigned long long photon;
    unsigned long long seed;
    unsigned int event;
};

__device__ uint4 philox(const Rng& r, unsigned int block) {
    unsigned int c0 = (unsigned int)(r.photon & 0xffffffffull);
    unsigned int c1 = (unsigned int)(r.photon >> 32);
    unsigned int c2 = block;
    unsigned int c3 = r.event;
    unsigned int k0 = (unsigned int)(r.seed & 0xffffffffull);
    unsigned int k1 = (unsigned int)(r.seed >> 32);
    for (int i = 0; i < 10; ++i) {
        if (i) { k0 += PH_W0; k1 += PH_W1; }
        unsigned int hi0 = __umulhi(PH_M0, c0), lo0 = PH_M0 * c0;
        unsigned int hi1 = __umulhi(PH_M1, c2), lo1 = PH_M1 * c2;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    return make_uint4(c0, c1, c2, c3);
}

// ((x >> 9) + 0.5) * 2^-23: exact in float32, in [2^-24, 1 - 2^-24] (philox.py to_uniform)
__device__ __forceinline__ float u01(unsigned int x) {
    return ((float)(x >> 9) + 0.5f) * 1.1920928955078125e-07f;
}

struct U4 { float x, y, z, w; };

__device__ U4 uniforms(const Rng& r, unsigned int block) {
    uint4 v = philox(r, block);
    U4 u = {u01(v.x), u01(v.y), u01(v.z), u01(v.w)};
    return u;
}

// ------------------------------------------------------------------ float3 helpers
__device__ __forceinline__ float3 f3(float x, float y, float z) { return make_float3(x, y, z); }
__device__ __forceinline__ float3 add(float3 a, float3 b) { return f3(a.x + b.x, a.y + b.y, a.z + b.z); }
__device__ __forceinline__ float3 sub(float3 a, float3 b) { return f3(a.x - b.x, a.y - b.y, a.z - b.z); }
__device__ __forceinline__ float3 mul(float s, float3 a) { return f3(s * a.x, s * a.y, s * a.z); }
__device__ __forceinline__ float3 neg(float3 a) { return f3(-a.x, -a.y, -a.z); }
__device__ __forceinline__ float dot(float3 a, float3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
__device__ __forceinline__ float3 cross(float3 a, float3 b) {
    return f3(a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x);
}
__device__ __forceinline__ float3 normalize(float3 a) {
    float l = sqrtf(dot(a, a));
    return f3(a.x / l, a.y / l, a.z / l);
}
__device__ __forceinline__ float comp(float3 a, int i) { return i == 0 ? a.x : (i == 1 ? a.y : a.z); }

// CLHEP Hep3Vector::rotateUz: local v expressed in the frame whose z axis is u
__device__ float3 rotate_uz(float3 u, float3 v) {
    float up = sqrtf(u.x * u.x + u.y * u.y);
    if (up > 0.0f) {
        return f3((u.x * u.z * v.x - u.y * v.y) / up + u.x * v.z,
                  (u.y * u.z * v.x + u.x * v.y) / up + u.y * v.z,
                  -up * v.x + u.z * v.z);
    }
    if (u.z < 0.0f) return f3(-v.x, v.y, -v.z);
    return v;
}

// ------------------------------------------------------------------ scene
struct Scene {
    const float* mat;        // (M, N_PROP, WL_N): n (0: no RINDEX), abs length, scat length, reemit prob, GROUPVEL
    const float* icdf;       // (M, ICDF_N) emission wavelengths at u = k/(ICDF_N-1)
    const float* surf;       // (S, 4, WL_N) detect, absorb, spec, diffuse
    const int* gi;           // geometry (engine/propagate/geometry/flatten.py): header, nodes,
    const double* gf;        // solids, CSG items, BVH; leaf parameters, transforms, boxes
};

// property k of material m at wavelength wl: a + f*(b - a) on the 1 nm grid
__device__ float lookup(const Scene& s, int m, int k, float wl) {
    float x = (wl - WL_MIN) / WL_STEP;
    x = fminf(fmaxf(x, 0.0f), (float)(WL_N - 1));
    int i0 = min((int)x, WL_N - 2);
    float f = x - (float)i0;
    const float* row = s.mat + ((size_t)m * N_PROP + k) * WL_N;
    float a = row[i0], b = row[i0 + 1];
    return a + f * (b - a);
}

// share k (detect, absorb, spec, diffuse) of surface i at wavelength wl (lookup.surface_at)
__device__ float surface_lookup(const Scene& s, int i, int k, float wl) {
    float x = (wl - WL_MIN) / WL_STEP;
    x = fminf(fmaxf(x, 0.0f), (float)(WL_N - 1));
    int i0 = min((int)x, WL_N - 2);
    float f = x - (float)i0;
    const float* row = s.surf + ((size_t)i * 4 + k) * WL_N;
    float a = row[i0], b = row[i0 + 1];
    return a + f * (b - a);
}

// emission wavelength of material m for uniform u: linear between the ICDF samples
// (engine/propagate/lookup.py icdf_sample); -1 where the material has no spectrum
__device__ float icdf_sample(const Scene& s, int m, float u) {
    float x = u * (float)(ICDF_N - 1);
    int i0 = min((int)x, ICDF_N - 2);
    float f = x - (float)i0;
    const float* row = s.icdf + (size_t)m * ICDF_N;
    float a = row[i0], b = row[i0 + 1];
    return a + f * (b - a);
}

// ------------------------------------------------------------------ geometry
// engine/propagate/geometry/trace.py, function by function, in double precision: the
// nearest boundary through the BVH (a small stack) and the CSG solids (convex leaves'
// intervals; the first interval end where the postfix program changes value).
#define G_BOX 1
#define G_ELL 2
#define G_CYL 3
#define G_CONE 4
#define G_WEDGE 5
#define G_NAPPE 6
#define G_HALF 7
#define G_MESH 9
#define H_TRI 12
#define MAXT 32
#define G_UNION 16
#define G_INTER 17
#define G_DIFF 18
#define H_NODE_I 1
#define H_NODE_F 2
#define H_SOLID_I 4
#define H_CSG_I 5
#define H_BVH_I 9
#define H_BVH_F 10
#define H_ITEMS 11
#define H_NODE_BOX 16
#define H_FLAT 17
#define H_NODES 0
#define NODE_I 8
#define NODE_F 12
#define MAXIV 64
#define BVH_STACK 64
#define TOL_ABS 1e-7
#define TOL_REL 1e-9
#define DINF __longlong_as_double(0x7ff0000000000000ll)

struct Iv { double lo, hi; int plo, phi; };

__device__ __forceinline__ void clip(Iv& v, double t0, double t1, int p0, int p1) {
    if (t0 > v.lo) { v.lo = t0; v.plo = p0; }
    if (t1 < v.hi) { v.hi = t1; v.phi = p1; }
}

__device__ void slab(double o, double d, double a, double b, Iv& v, int pa, int pb) {
    if (d == 0.0) {
        if (o < a || o > b) { v.lo = 1.0; v.hi = -1.0; }
        return;
    }
    double t1 = (a - o) / d;
    double t2 = (b - o) / d;
    if (d > 0.0) clip(v, t1, t2, pa, pb);
    else clip(v, t2, t1, pb, pa);
}

// real roots of A t^2 + 2 B t + C (A != 0), ascending; false when none
__device__ bool quad_roots(double A, double B, double C, double& r1, double& r2) {
    double disc = B * B - A * C;
    if (disc < 0.0) return false;
    double sq = sqrt(disc);
    double q = B >= 0.0 ? -(B + sq) : -(B - sq);
    if (q == 0.0) { r1 = 0.0; r2 = 0.0; return true; }
    r1 = q / A;
    r2 = C / q;
    if (r1 > r2) { double t = r1; r1 = r2; r2 = t; }
    return true;
}

__device__ void piece(double a, double b, double lo, double hi, int ps0, int ps1, Iv& best) {
    int pa = 0, pb = 0;
    if (lo > a) { a = lo; pa = ps0; }
    if (hi < b) { b = hi; pb = ps1; }
    if (a <= b && (best.lo > best.hi || b - a > best.hi - best.lo)) {
        best.lo = a; best.hi = b; best.plo = pa; best.phi = pb;
    }
}

// {A t^2 + 2 B t + C <= 0} within the interval v (parts of its ends kept): one piece
__device__ Iv quadric(double A, double B, double C, Iv v) {
    Iv r = {1.0, -1.0, -1, -1};
    if (A == 0.0) {
        if (B > 0.0) piece(-DINF, -C / (2.0 * B), v.lo, v.hi, v.plo, v.phi, r);
        else if (B < 0.0) piece(-C / (2.0 * B), DINF, v.lo, v.hi, v.plo, v.phi, r);
        else if (C <= 0.0) piece(-DINF, DINF, v.lo, v.hi, v.plo, v.phi, r);
        return r;
    }
    double r1, r2;
    if (!quad_roots(A, B, C, r1, r2)) {
        if (A < 0.0) piece(-DINF, DINF, v.lo, v.hi, v.plo, v.phi, r);
        return r;
    }
    if (A > 0.0) {
        piece(r1, r2, v.lo, v.hi, v.plo, v.phi, r);
        return r;
    }
    piece(-DINF, r1, v.lo, v.hi, v.plo, v.phi, r);
    piece(r2, DINF, v.lo, v.hi, v.plo, v.phi, r);
    return r;
}

__device__ Iv leaf_interval(int code, const double* p, double ox, double oy, double oz,
                            double dx, double dy, double dz) {
    Iv v = {-DINF, DINF, -1, -1};
    if (code == G_BOX) {
        slab(ox, dx, -p[0], p[0], v, 0, 1);
        slab(oy, dy, -p[1], p[1], v, 2, 3);
        slab(oz, dz, -p[2], p[2], v, 4, 5);
        return v;
    }
    if (code == G_ELL) {
        double a = p[0], b = p[1], c = p[2];
        slab(oz, dz, p[3], p[4], v, 1, 2);
        if (v.lo > v.hi) return v;
        double X = ox / a, Y = oy / b, Z = oz / c, U = dx / a, V = dy / b, W = dz / c;
        return quadric(U * U + V * V + W * W, X * U + Y * V + Z * W, X * X + Y * Y + Z * Z - 1.0, v);
    }
    if (code == G_CYL) {
        double r = p[0];
        slab(oz, dz, p[1], p[2], v, 1, 2);
        if (v.lo > v.hi) return v;
        return quadric(dx * dx + dy * dy, ox * dx + oy * dy, ox * ox + oy * oy - r * r, v);
    }
    if (code == G_CONE) {
        double r1 = p[0], r2 = p[1], z1 = p[2], z2 = p[3];
        slab(oz, dz, z1, z2, v, 1, 2);
        if (v.lo > v.hi) return v;
        double k = (r2 - r1) / (z2 - z1);
        double w = oz - (z1 - r1 / k);
        double k2 = k * k;
        return quadric(dx * dx + dy * dy - k2 * dz * dz, ox * dx + oy * dy - k2 * w * dz,
                       ox * ox + oy * oy - k2 * w * w, v);
    }
    if (code == G_WEDGE) {
        for (int i = 0; i < 2; ++i) {
            double nx = p[2 * i], ny = p[2 * i + 1];
            double nd = nx * dx + ny * dy;
            double no = nx * ox + ny * oy;
            if (nd == 0.0) {
                if (no > 0.0) { Iv e = {1.0, -1.0, -1, -1}; return e; }
            } else if (nd > 0.0) {
                double t = -no / nd;
                if (t < v.hi) { v.hi = t; v.phi = i; }
            } else {
                double t = -no / nd;
                if (t > v.lo) { v.lo = t; v.plo = i; }
            }
        }
        return v;
    }
    if (code == G_NAPPE) {
        double tan2 = p[0], sg = p[1];
        slab(sg * oz, sg * dz, 0.0, 1e300, v, 1, 1);
        if (v.lo > v.hi) return v;
        return quadric(dx * dx + dy * dy - tan2 * dz * dz, ox * dx + oy * dy - tan2 * oz * dz,
                       ox * ox + oy * oy - tan2 * oz * oz, v);
    }
    if (code == G_HALF) {
        double nd = p[0] * dx + p[1] * dy + p[2] * dz;
        double no = p[0] * ox + p[1] * oy + p[2] * oz;
        double dd = p[3];
        if (nd == 0.0) {
            if (no > dd) { Iv e = {1.0, -1.0, -1, -1}; return e; }
        } else if (nd > 0.0) {
            v.hi = (dd - no) / nd; v.phi = 0;
        } else {
            v.lo = (dd - no) / nd; v.plo = 0;
        }
        return v;
    }
    Iv e = {1.0, -1.0, -1, -1};
    return e;
}

// every crossing of the line with a tessellated solid's triangles (Moller-Trumbore),
// ascending, with the gf offset of each triangle (trace.mesh_crossings)
__device__ int mesh_crossings(const double* gf, int tri, int ntri, double ox, double oy,
                              double oz, double dx, double dy, double dz, double* ts, int* ps) {
    int n = 0;
    for (int k = 0; k < ntri; ++k) {
        int b = tri + 9 * k;
        double e1x = gf[b + 3] - gf[b], e1y = gf[b + 4] - gf[b + 1], e1z = gf[b + 5] - gf[b + 2];
        double e2x = gf[b + 6] - gf[b], e2y = gf[b + 7] - gf[b + 1], e2z = gf[b + 8] - gf[b + 2];
        double px = dy * e2z - dz * e2y, py = dz * e2x - dx * e2z, pz = dx * e2y - dy * e2x;
        double det = e1x * px + e1y * py + e1z * pz;
        if (det == 0.0) continue;
        double inv = 1.0 / det;
        double sx = ox - gf[b], sy = oy - gf[b + 1], sz = oz - gf[b + 2];
        double u = (sx * px + sy * py + sz * pz) * inv;
        if (u < 0.0 || u > 1.0) continue;
        double qx = sy * e1z - sz * e1y, qy = sz * e1x - sx * e1z, qz = sx * e1y - sy * e1x;
        double v = (dx * qx + dy * qy + dz * qz) * inv;
        if (v < 0.0 || u + v > 1.0) continue;
        double t = (e2x * qx + e2y * qy + e2z * qz) * inv;
        if (n < MAXT) {
            int j = n;
            while (j > 0 && ts[j - 1] > t) { ts[j] = ts[j - 1]; ps[j] = ps[j - 1]; --j; }
            ts[j] = t; ps[j] = b;
            ++n;
        }
    }
    return n;
}

__device__ void leaf_normal(int code, const double* p, double x, double y, double z, int part,
                            double& nx, double& ny, double& nz) {
    if (code == G_BOX) {
        int a = part / 2;
        double sg = (part % 2 == 1) ? 1.0 : -1.0;
        nx = a == 0 ? sg : 0.0; ny = a == 1 ? sg : 0.0; nz = a == 2 ? sg : 0.0;
        return;
    }
    if (code == G_WEDGE) { nx = p[2 * part]; ny = p[2 * part + 1]; nz = 0.0; return; }
    if (code == G_HALF) { nx = p[0]; ny = p[1]; nz = p[2]; return; }
    if (code == G_NAPPE) {
        if (part == 1) { nx = 0.0; ny = 0.0; nz = -p[1]; return; }
        nx = x; ny = y; nz = -p[0] * z; return;
    }
    if (code == G_MESH) return;  // trace() takes a mesh's normal from its triangle
    if (part == 1) { nx = 0.0; ny = 0.0; nz = -1.0; return; }
    if (part == 2) { nx = 0.0; ny = 0.0; nz = 1.0; return; }
    if (code == G_ELL) { nx = x / (p[0] * p[0]); ny = y / (p[1] * p[1]); nz = z / (p[2] * p[2]); return; }
    if (code == G_CYL) { nx = x; ny = y; nz = 0.0; return; }
    if (code == G_CONE) {
        double k = (p[1] - p[0]) / (p[3] - p[2]);
        nx = x; ny = y; nz = -k * k * (z - (p[2] - p[0] / k)); return;
    }
    nx = 0.0; ny = 0.0; nz = 1.0;
}

// x' = R x + T with R, T at gf[xo..xo+12) (xo < 0: identity); rot: R x; rot_t: R^T x
__device__ void xf(const double* gf, int xo, double& x, double& y, double& z) {
    if (xo < 0) return;
    const double* r = gf + xo;
    double a = r[0] * x + r[1] * y + r[2] * z + r[9];
    double b = r[3] * x + r[4] * y + r[5] * z + r[10];
    double c = r[6] * x + r[7] * y + r[8] * z + r[11];
    x = a; y = b; z = c;
}
__device__ void rot(const double* gf, int xo, double& x, double& y, double& z) {
    if (xo < 0) return;
    const double* r = gf + xo;
    double a = r[0] * x + r[1] * y + r[2] * z;
    double b = r[3] * x + r[4] * y + r[5] * z;
    double c = r[6] * x + r[7] * y + r[8] * z;
    x = a; y = b; z = c;
}
__device__ void rot_t(const double* gf, int xo, double& x, double& y, double& z) {
    if (xo < 0) return;
    const double* r = gf + xo;
    double a = r[0] * x + r[3] * y + r[6] * z;
    double b = r[1] * x + r[4] * y + r[7] * z;
    double c = r[2] * x + r[5] * y + r[8] * z;
    x = a; y = b; z = c;
}

struct Ivs { double lo[MAXIV], hi[MAXIV]; int leaf[MAXIV], plo[MAXIV], phi[MAXIV]; };

// the CSG program's value just after t (a bit stack)
__device__ bool csg_eval(const int* gi, int c0, int nc, double t, const Ivs& iv, int niv) {
    unsigned long long stack = 0ull;
    int sp = 0, leaf = 0, j = 0;
    for (int c = c0; c < c0 + 4 * nc; c += 4) {
        int code = gi[c];
        if (code < 16) {
            bool inside = false;
            while (j < niv && iv.leaf[j] == leaf) {
                if (iv.lo[j] <= t && t < iv.hi[j]) inside = true;
                ++j;
            }
            ++leaf;
            if (inside) stack |= 1ull << sp;
            ++sp;
        } else {
            --sp;
            unsigned long long b = (stack >> sp) & 1ull;
            unsigned long long a = (stack >> (sp - 1)) & 1ull;
            unsigned long long r = code == G_UNION ? (a | b) : (code == G_INTER ? (a & b) : (a & (b ^ 1ull)));
            stack &= ~(3ull << (sp - 1));
            stack |= r << (sp - 1);
        }
    }
    return (stack & 1ull) == 1ull;
}

// solid_hit of a solid that is one convex leaf at CSG item c0 (trace.leaf_hit)
__device__ double leaf_hit(const int* gi, const double* gf, int c0, double ox, double oy,
                           double oz, double dx, double dy, double dz, double tmin, double tmax,
                           int& item, int& part, bool& enter) {
    int xo = gi[c0 + 2];
    double lx = ox, ly = oy, lz = oz, ux = dx, uy = dy, uz = dz;
    xf(gf, xo, lx, ly, lz);
    rot(gf, xo, ux, uy, uz);
    Iv v = leaf_interval(gi[c0], gf + gi[c0 + 1], lx, ly, lz, ux, uy, uz);
    if (v.lo > v.hi) return DINF;
    if (v.lo > tmin) {
        if (v.lo >= tmax || !(v.lo + (TOL_ABS + TOL_REL * fabs(v.lo)) < v.hi)) return DINF;
        item = c0; part = v.plo; enter = true;
        return v.lo;
    }
    if (v.hi > tmin && v.hi < tmax) {
        item = c0; part = v.phi; enter = false;
        return v.hi;
    }
    return DINF;
}

// boundary of solid sol in (tmin, tmax) along the ray (solid frame): t (inf: none), the CSG
// item offset of the leaf hit, its part, entering
__device__ double solid_hit(const int* gi, const double* gf, int sol, double ox, double oy,
                            double oz, double dx, double dy, double dz, double tmin, double tmax,
                            Ivs& iv, int& item, int& part, bool& enter) {
    int hs = gi[H_SOLID_I];
    int c0 = gi[H_CSG_I] + 4 * gi[hs + 2 * sol];
    int nc = gi[hs + 2 * sol + 1];
    if (nc == 1 && gi[c0] != G_MESH)  // one convex leaf: the general walk below, written out
        return leaf_hit(gi, gf, c0, ox, oy, oz, dx, dy, dz, tmin, tmax, item, part, enter);
    int niv = 0, leaf = 0;
    for (int c = c0; c < c0 + 4 * nc; c += 4) {
        int code = gi[c];
        if (code >= 16) continue;
        int xo = gi[c + 2];
        double lx = ox, ly = oy, lz = oz, ux = dx, uy = dy, uz = dz;
        xf(gf, xo, lx, ly, lz);
        rot(gf, xo, ux, uy, uz);
        if (code == G_MESH) {
            const double* p = gf + gi[c + 1];
            double ts[MAXT];
            int ps[MAXT];
            int nt = mesh_crossings(gf, gi[H_TRI] + 9 * (int)p[0], (int)p[1], lx, ly, lz, ux, uy, uz,
                                    ts, ps);
            for (int j = 0; j + 1 < nt; j += 2) {
                if (niv < MAXIV) {
                    iv.lo[niv] = ts[j]; iv.hi[niv] = ts[j + 1]; iv.leaf[niv] = leaf;
                    iv.plo[niv] = ps[j]; iv.phi[niv] = ps[j + 1];
                    ++niv;
                }
            }
            ++leaf;
            continue;
        }
        Iv v = leaf_interval(code, gf + gi[c + 1], lx, ly, lz, ux, uy, uz);
        if (v.lo <= v.hi && niv < MAXIV) {
            iv.lo[niv] = v.lo; iv.hi[niv] = v.hi; iv.leaf[niv] = leaf;
            iv.plo[niv] = v.plo; iv.phi[niv] = v.phi;
            ++niv;
        }
        ++leaf;
    }
    bool cur = csg_eval(gi, c0, nc, tmin, iv, niv);
    double t = tmin;
    for (int it = 0; it < 2 * niv + 1; ++it) {
        double tc = DINF;
        int best = -1, side = 0;
        for (int j = 0; j < niv; ++j) {
            if (iv.lo[j] > t && iv.lo[j] < tc) { tc = iv.lo[j]; best = j; side = 0; }
            if (iv.hi[j] > t && iv.hi[j] < tc) { tc = iv.hi[j]; best = j; side = 1; }
        }
        if (best < 0 || tc >= tmax) return DINF;
        double ta = tc + (TOL_ABS + TOL_REL * fabs(tc));
        bool nw = csg_eval(gi, c0, nc, ta, iv, niv);
        if (nw != cur) {
            int want = iv.leaf[best];
            int l = 0;
            for (int c = c0; c < c0 + 4 * nc; c += 4) {
                if (gi[c] < 16) {
                    if (l == want) {
                        item = c;
                        part = side == 0 ? iv.plo[best] : iv.phi[best];
                        enter = nw;
                        return tc;
                    }
                    ++l;
                }
            }
        }
        t = ta;
    }
    return DINF;
}

// where the ray enters box b within [tmin, tmax) (trace._box_enter); DINF: missed
__device__ double box_enter(const double* bf, int b, double px, double py, double pz,
                            double ix, double iy, double iz, double tmin, double tmax) {
    double lo = tmin, hi = tmax;
    double o3[3] = {px, py, pz}, i3[3] = {ix, iy, iz};
    for (int a = 0; a < 3; ++a) {
        double o = o3[a], inv = i3[a];
        double blo = bf[6 * b + a], bhi = bf[6 * b + 3 + a];
        if (inv == DINF || inv == -DINF) {
            if (o < blo || o > bhi) return DINF;
            continue;
        }
        double t1 = (blo - o) * inv;
        double t2 = (bhi - o) * inv;
        if (t1 > t2) { double t = t1; t1 = t2; t2 = t; }
        if (t1 > lo) lo = t1;
        if (t2 < hi) hi = t2;
        if (lo > hi) return DINF;
    }
    return lo;
}

struct Hit { float t; int node; int face; bool enter; float3 normal; };

// the normal at the hit, leaf frame -> solid frame -> world, oriented by the change of state
// (trace._hit_normal), into h
__device__ void hit_normal(const int* gi, const double* gf, double px, double py, double pz,
                           double dx, double dy, double dz, double best, int bnode, int bitem,
                           int bpart, bool benter, Hit& h) {
    int xo = gi[H_NODE_F] + NODE_F * bnode;
    double lx = px, ly = py, lz = pz, ux = dx, uy = dy, uz = dz;
    xf(gf, xo, lx, ly, lz);
    rot(gf, xo, ux, uy, uz);
    int lxo = gi[bitem + 2];
    double qx = lx + best * ux, qy = ly + best * uy, qz = lz + best * uz;
    xf(gf, lxo, qx, qy, qz);
    double nx = 0.0, ny = 0.0, nz = 1.0;
    if (gi[bitem] == G_MESH) {  // part: the triangle's offset in gf
        const double* tr = gf + bpart;
        double e1x = tr[3] - tr[0], e1y = tr[4] - tr[1], e1z = tr[5] - tr[2];
        double e2x = tr[6] - tr[0], e2y = tr[7] - tr[1], e2z = tr[8] - tr[2];
        nx = e1y * e2z - e1z * e2y; ny = e1z * e2x - e1x * e2z; nz = e1x * e2y - e1y * e2x;
    } else {
        leaf_normal(gi[bitem], gf + gi[bitem + 1], qx, qy, qz, bpart, nx, ny, nz);
    }
    rot_t(gf, lxo, nx, ny, nz);
    rot_t(gf, xo, nx, ny, nz);
    double ln = sqrt(nx * nx + ny * ny + nz * nz);
    nx /= ln; ny /= ln; nz /= ln;
    double c = nx * dx + ny * dy + nz * dz;
    if ((benter && c > 0.0) || (!benter && c < 0.0)) { nx = -nx; ny = -ny; nz = -nz; }
    h.t = (float)best;
    h.node = bnode;
    h.face = gi[bitem + 3] + bpart;
    h.enter = benter;
    h.normal = f3((float)nx, (float)ny, (float)nz);
}

// a flat geometry (header H_FLAT: the BVH one leaf, every solid one convex leaf;
// trace.trace_flat_one): the leaf's nodes in its order, each node's box then its leaf, no
// walk, no stack, no CSG scratch; the same tests in the same order as the walk
__device__ Hit trace_flat(const int* gi, const double* gf, double px, double py, double pz,
                          double dx, double dy, double dz, double tmin) {
    int items = gi[H_ITEMS], hs = gi[H_SOLID_I], ni = gi[H_NODE_I], nf = gi[H_NODE_F];
    int csg = gi[H_CSG_I];
    const double* nbox = gf + gi[H_NODE_BOX];
    double ix = dx != 0.0 ? 1.0 / dx : DINF;
    double iy = dy != 0.0 ? 1.0 / dy : DINF;
    double iz = dz != 0.0 ? 1.0 / dz : DINF;
    double best = DINF;
    int bnode = -1, bitem = -1, bpart = 0;
    bool benter = false;
    int nn = gi[H_NODES];
    for (int q = 0; q < nn; ++q) {
        int k = gi[items + q];
        if (box_enter(nbox, k, px, py, pz, ix, iy, iz, tmin, best) == DINF) continue;
        int xo = nf + NODE_F * k;
        double lx = px, ly = py, lz = pz, ux = dx, uy = dy, uz = dz;
        xf(gf, xo, lx, ly, lz);
        rot(gf, xo, ux, uy, uz);
        int c0 = csg + 4 * gi[hs + 2 * gi[ni + NODE_I * k]];
        int item = -1, part = 0;
        bool enter = false;
        double t = leaf_hit(gi, gf, c0, lx, ly, lz, ux, uy, uz, tmin, best, item, part, enter);
        if (t < best) { best = t; bnode = k; bitem = item; bpart = part; benter = enter; }
    }
    Hit h;
    if (bnode < 0) {
        h.t = INF; h.node = -1; h.face = 0; h.enter = false; h.normal = f3(0.0f, 0.0f, 1.0f);
        return h;
    }
    hit_normal(gi, gf, px, py, pz, dx, dy, dz, best, bnode, bitem, bpart, benter, h);
    return h;
}

// nearest boundary beyond tmin (trace.trace_one): node -1 and t = inf when none
__device__ Hit trace(const Scene& s, float3 p, float3 d, float eps) {
    const int* gi = s.gi;
    const double* gf = s.gf;
    int nb = gi[H_BVH_I], items = gi[H_ITEMS], ni = gi[H_NODE_I], nf = gi[H_NODE_F];
    const double* bf = gf + gi[H_BVH_F];
    const double* nbox = gf + gi[H_NODE_BOX];
    double px = p.x, py = p.y, pz = p.z, dx = d.x, dy = d.y, dz = d.z;
    double tmin = (double)eps;
    if (gi[H_FLAT] != 0) return trace_flat(gi, gf, px, py, pz, dx, dy, dz, tmin);
    double ix = dx != 0.0 ? 1.0 / dx : DINF;
    double iy = dy != 0.0 ? 1.0 / dy : DINF;
    double iz = dz != 0.0 ? 1.0 / dz : DINF;
    double best = DINF;
    int bnode = -1, bitem = -1, bpart = 0;
    bool benter = false;
    Ivs iv;
    int stack[BVH_STACK];
    int sp = 0;
    stack[sp++] = 0;
    while (sp > 0) {
        int b = stack[--sp];
        if (box_enter(bf, b, px, py, pz, ix, iy, iz, tmin, best) == DINF) continue;
        int start = gi[nb + 2 * b], count = gi[nb + 2 * b + 1];
        if (count == 0) {  // the nearer child on top of the stack, a missed one not at all
            double ta = box_enter(bf, start, px, py, pz, ix, iy, iz, tmin, best);
            double tb = box_enter(bf, start + 1, px, py, pz, ix, iy, iz, tmin, best);
            if (ta != DINF && tb != DINF && sp + 2 <= BVH_STACK) {
                if (ta <= tb) { stack[sp] = start + 1; stack[sp + 1] = start; }
                else { stack[sp] = start; stack[sp + 1] = start + 1; }
                sp += 2;
            } else if (ta != DINF && sp < BVH_STACK) {
                stack[sp++] = start;
            } else if (tb != DINF && sp < BVH_STACK) {
                stack[sp++] = start + 1;
            }
            continue;
        }
        for (int q = start; q < start + count; ++q) {
            int k = gi[items + q];
            if (box_enter(nbox, k, px, py, pz, ix, iy, iz, tmin, best) == DINF) continue;
            int xo = nf + NODE_F * k;
            double lx = px, ly = py, lz = pz, ux = dx, uy = dy, uz = dz;
            xf(gf, xo, lx, ly, lz);
            rot(gf, xo, ux, uy, uz);
            int item = -1, part = 0;
            bool enter = false;
            double t = solid_hit(gi, gf, gi[ni + NODE_I * k], lx, ly, lz, ux, uy, uz, tmin, best,
                                 iv, item, part, enter);
            if (t < best) { best = t; bnode = k; bitem = item; bpart = part; benter = enter; }
        }
    }
    Hit h;
    if (bnode < 0) {
        h.t = INF; h.node = -1; h.face = 0; h.enter = false; h.normal = f3(0.0f, 0.0f, 1.0f);
        return h;
    }
    hit_normal(gi, gf, px, py, pz, dx, dy, dz, best, bnode, bitem, bpart, benter, h);
    return h;
}

// ------------------------------------------------------------------ physics
// Fresnel with polarization (numpy_backend.fresnel); returns true when reflected
__device__ bool fresnel(float3& d, float3& pol, float3 normal, float n1, float n2, float u) {
    float c1 = -dot(d, normal);
    float3 nrm = c1 < 0.0f ? neg(normal) : normal;
    c1 = fabsf(c1);
    float eta = n1 / n2;
    float c2sq = 1.0f - eta * eta * (1.0f - c1 * c1);
    bool tir = c2sq < 0.0f;
    float c2 = sqrtf(fmaxf(c2sq, 0.0f));
    float3 a = cross(d, nrm);
    float alen = sqrtf(dot(a, a));
    bool normal_inc = alen < 1e-6f;
    float3 a_trans = normal_inc ? pol : f3(a.x / alen, a.y / alen, a.z / alen);
    float e_perp = normal_inc ? 0.0f : dot(pol, a_trans);
    float3 ev = sub(pol, mul(e_perp, a_trans));
    float e_parl = normal_inc ? 1.0f : sqrtf(dot(ev, ev));
    float n1c1 = n1 * c1, n2c2 = n2 * c2, n2c1 = n2 * c1, n1c2 = n1 * c2;
    float t_s = 2.0f * n1c1 * e_perp / (n1c1 + n2c2);
    float t_p = 2.0f * n1c1 * e_parl / (n2c1 + n1c2);
    float r_s = t_s - e_perp;
    float r_p = (n2 / n1) * t_p - e_parl;
    float trans = tir ? 0.0f : (n2c2 / n1c1) * (t_s * t_s + t_p * t_p);
    bool reflect = u > trans;
    float3 new_d = reflect ? add(d, mul(2.0f * c1, nrm))
                           : add(mul(eta, d), mul(eta * c1 - c2, nrm));
    float3 a_paral = normalize(cross(new_d, a_trans));
    float es = reflect ? r_s : t_s;
    float ep = reflect ? r_p : t_p;
    float el = sqrtf(es * es + ep * ep);
    es = es / el; ep = ep / el;
    float3 new_pol = add(mul(es, a_trans), mul(ep, a_paral));
    if (tir) new_pol = add(neg(pol), mul(2.0f * dot(pol, nrm), nrm));
    if (normal_inc) {
        float flip = n2 > n1 ? -1.0f : 1.0f;
        new_pol = reflect ? mul(flip, pol) : pol;
    }
    d = new_d;
    pol = new_pol;
    return reflect;
}

// Rayleigh (G4OpRayleigh via Opticks): two blocks per rejection try
__device__ void rayleigh(float3& d, float3& pol, const Rng& rng, unsigned int& blk) {
    for (int tries = 0; tries < MAX_TRIES; ++tries) {
        U4 ua = uniforms(rng, blk);
        U4 ub = uniforms(rng, blk + 1);
        blk += 2;
        float ct = ua.y < 0.5f ? -ua.x : ua.x;
        float st = sqrtf(fmaxf(0.0f, 1.0f - ct * ct));
        float ph = TWO_PI * ua.z;
        float3 nd = rotate_uz(d, f3(st * cosf(ph), st * sinf(ph), ct));
        float3 cp = sub(pol, mul(dot(pol, nd), nd));
        float clen = sqrtf(dot(cp, cp));
        if (clen == 0.0f) {
            float ph3 = TWO_PI * ua.w;
            cp = rotate_uz(nd, f3(cosf(ph3), sinf(ph3), 0.0f));
        } else {
            if (ua.w < 0.5f) cp = neg(cp);
            cp = f3(cp.x / clen, cp.y / clen, cp.z / clen);
        }
        float c = dot(cp, pol);
        if (c * c >= ub.x) { d = nd; pol = cp; return; }
    }
}

// Lambertian: cosine-law direction about the normal facing the photon, one block per try
__device__ void lambertian(float3& d, float3& pol, float3 normal, const Rng& rng, unsigned int& blk) {
    float3 nin = dot(d, normal) > 0.0f ? neg(normal) : normal;
    float3 nd = nin;
    for (int tries = 0; tries < MAX_TRIES; ++tries) {
        U4 u = uniforms(rng, blk);
        blk += 1;
        float a = 2.0f * u.x - 1.0f;
        float b = 2.0f * u.y - 1.0f;
        float s = a * a + b * b;
        float root = 2.0f * sqrtf(fmaxf(0.0f, 1.0f - s));
        float3 v = f3(a * root, b * root, 2.0f * s - 1.0f);
        float c = dot(v, nin);
        if (c < 0.0f) v = neg(v);
        if (s < 1.0f && u.z < fabsf(c)) { nd = v; break; }
    }
    float3 f = normalize(sub(nd, d));
    pol = add(neg(pol), mul(2.0f * dot(pol, f), f));
    d = nd;
}

__device__ short clip_short(float v) {
    return (short)fminf(fmaxf(rintf(v), -32767.0f), 32767.0f);
}
__device__ unsigned int u8(float v) {
    return (unsigned int)fminf(fmaxf(rintf(v), 0.0f), 255.0f);
}

__device__ short4 rec0(float3 p, float t, float ext, float tmax) {
    return make_short4(clip_short(32767.0f * p.x / ext), clip_short(32767.0f * p.y / ext),
                       clip_short(32767.0f * p.z / ext), clip_short(32767.0f * t / tmax));
}
__device__ short4 rec1(float3 pol, float wl, unsigned int boundary, unsigned int flag) {
    unsigned int px = u8((pol.x + 1.0f) * 127.0f), py = u8((pol.y + 1.0f) * 127.0f);
    unsigned int pz = u8((pol.z + 1.0f) * 127.0f), w = u8(255.0f * (wl - WL_MIN) / 760.0f);
    return make_short4((short)(px | (py << 8)), (short)(pz | (w << 8)), (short)boundary, (short)flag);
}

__device__ __forceinline__ unsigned long long nib(unsigned int flag) {
    return flag ? (unsigned long long)(__ffs(flag)) : 0ull;
}

// ------------------------------------------------------------------ generation
struct Photon { float3 pos, dir, pol; float t, wl; unsigned int flag, blk; };

// TORCH (generate/torch.py): q1 pos,t  q2 mom,weight  q3 pol,wl  q5 radius,-,mode,type
__device__ Photon generate_torch(const float* q, const Rng& rng) {
    int typ = __float_as_int(q[23]);
    float3 center = f3(q[4], q[5], q[6]);
    float3 mom = f3(q[8], q[9], q[10]);
    float3 gpol = f3(q[12], q[13], q[14]);
    float radius = q[20];
    bool iso = q[22] > 0.0f;
    U4 a = uniforms(rng, 0);
    U4 b = uniforms(rng, 1);
    float3 pos = center, d = mom, pol = f3(0.0f, 0.0f, 0.0f);
    float ct = 2.0f * a.x - 1.0f;
    float st = sqrtf(fmaxf(0.0f, 1.0f - ct * ct));
    float ph = TWO_PI * a.y;
    float3 isov = f3(st * cosf(ph), st * sinf(ph), ct);
    if (typ == 1) {
        float r = radius * sqrtf(a.x);
        pos = add(center, rotate_uz(mom, f3(r * cosf(ph), r * sinf(ph), 0.0f)));
        pol = rotate_uz(mom, f3(sinf(ph), -cosf(ph), 0.0f));
    } else if (typ == 2) {
        if (iso) d = isov;
    } else if (typ == 3) {
        pos = add(center, mul(fabsf(radius), isov));
        d = radius > 0.0f ? isov : neg(isov);
    }
    if (dot(gpol, gpol) > 0.0f) {
        pol = normalize(sub(gpol, mul(dot(gpol, d), d)));
    } else if (typ != 1) {
        float psi = TWO_PI * b.x;
        pol = rotate_uz(d, f3(cosf(psi), sinf(psi), 0.0f));
    }
    Photon p = {pos, d, pol, q[7], q[15], F_TO, TORCH_BLOCKS};
    return p;
}

// CERENKOV (generate/cerenkov.py, Opticks qcerenkov::generate): q1 pos,t0  q2 DeltaPosition,
// step  q3 code,charge,weight,preVelocity  q4 BetaInverse,Wmin,Wmax,maxCos
// q5 maxSin2,MeanNumberOfPhotons1,MeanNumberOfPhotons2,postVelocity
__device__ Photon generate_cerenkov(const Scene& s, const float* q, const Rng& rng) {
    int m = __float_as_int(q[2]);
    float3 x0 = f3(q[4], q[5], q[6]);
    float3 dp = f3(q[8], q[9], q[10]);
    float step = q[11], pre_v = q[15], post_v = q[23];
    float bi = q[16], wmin = q[17], wmax = q[18];
    float maxsin2 = q[20], mnp1 = q[21], mnp2 = q[22];
    float3 p0 = normalize(dp);
    unsigned int blk = 0;
    float wl = 0.0f, ct = 0.0f, s2 = 0.0f, uphi = 0.0f;
    for (int tries = 0; tries < MAX_CK_TRIES; ++tries) {
        U4 u = uniforms(rng, blk);
        blk += 1;
        float w = wmin + u.x * (wmax - wmin);
        float lam = wmin * wmax / w;  // reciprocal: uniform in photon energy
        float c = bi / lookup(s, m, 0, lam);
        float sn = fmaxf(0.0f, (1.0f - c) * (1.0f + c));
        wl = lam; ct = c; s2 = sn; uphi = u.z;
        if (!(u.y * maxsin2 > sn)) break;
    }
    float st = sqrtf(s2);
    float ph = TWO_PI * uphi;
    float cp = cosf(ph), sp = sinf(ph);
    float3 dir = rotate_uz(p0, f3(st * cp, st * sp, ct));
    float3 pol = rotate_uz(p0, f3(ct * cp, ct * sp, -st));
    float mx = fmaxf(mnp1, mnp2), dn = mnp1 - mnp2, frac = 0.0f;
    for (int tries = 0; tries < MAX_TRIES; ++tries) {
        U4 u = uniforms(rng, blk);
        blk += 1;
        frac = u.x;
        if (!(u.y * mx > mnp1 - frac * dn)) break;
    }
    float mid_v = pre_v + frac * (post_v - pre_v) * 0.5f;
    Photon p = {add(x0, mul(frac, dp)), dir, pol, q[7] + frac * step / mid_v, wl, F_CK, blk};
    return p;
}

// SCINTILLATION (generate/scint.py, Opticks qscint::generate): q1 pos,t0  q2 DeltaPosition,
// step  q3 code,charge,weight,meanVelocity  q4.x component  q5.x ScintillationTime
__device__ Photon generate_scint(const Scene& s, const float* q, const Rng& rng) {
    int m = __float_as_int(q[2]);
    float3 x0 = f3(q[4], q[5], q[6]);
    float3 dp = f3(q[8], q[9], q[10]);
    float step = q[11], charge = q[13], mean_v = q[15], tau = q[20];
    U4 u = uniforms(rng, 0);
    float cost = 1.0f - 2.0f * u.x;
    float sint = sqrtf((1.0f - cost) * (1.0f + cost));
    float phi = TWO_PI * u.y;
    float cosp = cosf(phi), sinp = sinf(phi);
    float3 mom = f3(sint * cosp, sint * sinp, cost);
    float3 pol = f3(cost * cosp, cost * sinp, -sint);
    phi = TWO_PI * u.z;
    cosp = cosf(phi); sinp = sinf(phi);
    pol = normalize(add(mul(cosp, pol), mul(sinp, cross(mom, pol))));
    float wl = icdf_sample(s, m, u.w);
    U4 v = uniforms(rng, 1);
    float frac = charge == 0.0f ? 1.0f : v.x;
    float along = step > 0.0f ? frac * step / mean_v : 0.0f;
    float t = q[7] + (along - tau * logf(v.y));
    Photon p = {add(x0, mul(frac, dp)), mom, pol, t, wl, F_SI, SCINT_BLOCKS};
    return p;
}

// the switch on the gentype (Opticks OpticksGenstep.h codes; generate/kinds.py)
__device__ Photon generate_photon(const Scene& s, const float* q, const Rng& rng) {
    switch (__float_as_int(q[0])) {
        case 15: case 18: case 1: return generate_cerenkov(s, q, rng);
        case 16: case 5: case 2: return generate_scint(s, q, rng);
        default: return generate_torch(q, rng);
    }
}

// ------------------------------------------------------------------ kernel
extern "C" __global__ void propagate(
    const float* mat, const float* icdf, const float* surf, const int* geo_i,
    const double* geo_f, const float* gs, const unsigned long long* gs_ends,
    int n_gs, int face_ids, int n_surf,
    unsigned long long start, unsigned int count, unsigned long long seed, unsigned int event,
    int max_bounce, unsigned int hitmask, int development, float space_extent, float time_max,
    float eps, float4* hits, unsigned int* hit_count, unsigned int* fm_hist,
    float4* ox, short4* rx, unsigned long long* seq_out)
{
    unsigned int local = blockIdx.x * blockDim.x + threadIdx.x;
    if (local >= count) return;
    unsigned long long idx = start + local;
    Scene s = {mat, icdf, surf, geo_i, geo_f};
    Rng rng = {idx, seed, event};
    int maxrec = max_bounce + 1;

    // genstep of this photon: first cumulative end > idx
    int g = 0;
    {
        int lo = 0, hi = n_gs;
        while (lo < hi) { int mid = (lo + hi) / 2; if (gs_ends[mid] > idx) hi = mid; else lo = mid + 1; }
        g = lo < n_gs ? lo : n_gs - 1;
    }
    // ---- generation (engine/propagate/generate): the genstep's kind decides
    Photon ph = generate_photon(s, gs + g * 24, rng);
    float3 pos = ph.pos, d = ph.dir, pol = ph.pol;
    float t = ph.t;
    float wl = ph.wl;
    unsigned int blk = ph.blk;
    unsigned int flag = ph.flag, flagmask = ph.flag, boundary = 0, sensor = 0;
    unsigned long long seq = nib(ph.flag);
    if (development) {
        size_t r0 = (size_t)local * maxrec * 2;
        rx[r0] = rec0(pos, t, space_extent, time_max);
        rx[r0 + 1] = rec1(pol, wl, boundary, flag);
        for (int k = 1; k < maxrec; ++k) {
            rx[r0 + 2 * k] = make_short4(0, 0, 0, 0);
            rx[r0 + 2 * k + 1] = make_short4(0, 0, 0, 0);
        }
    }

    // ---- stepping (numpy_backend.propagate_chunk)
    for (int bounce = 0; bounce < max_bounce; ++bounce) {
        bool dead = false;
        Hit h = trace(s, pos, d, eps);
        // Opticks' boundary model: the side of the node's solid gives materials, surface,
        // sensor (engine/propagate/geometry/flatten.py)
        const int* nd = geo_i + geo_i[H_NODE_I] + NODE_I * (h.node < 0 ? 0 : h.node);
        int m1 = h.enter ? nd[1] : nd[4];
        bool miss = h.node < 0 || m1 < 0;
        if (m1 < 0) m1 = 0;
        U4 u = uniforms(rng, blk);
        blk += 1;
        float n1 = lookup(s, m1, 0, wl);
        float la = lookup(s, m1, 1, wl);
        float ls = lookup(s, m1, 2, wl);
        float pre = lookup(s, m1, 3, wl);
        float vg = lookup(s, m1, 4, wl);
        float d_s = -ls * logf(u.x);
        float d_a = -la * logf(u.y);
        bool absorb = !miss && (d_a <= d_s) && (d_a <= h.t);
        bool scat = !miss && !absorb && (d_s <= h.t);
        bool sail = !miss && !absorb && !scat;
        float step = absorb ? d_a : (scat ? d_s : h.t);
        if (miss) step = 0.0f;
        pos = add(pos, mul(step, d));
        t = t + step / vg;
        if (miss) { flag = F_MI; dead = true; }

        if (absorb) {
            if (u.w < pre) {
                U4 ua = uniforms(rng, blk);
                U4 ub = uniforms(rng, blk + 1);
                blk += 2;
                float new_wl = icdf_sample(s, m1, ua.x);
                if (!(new_wl < 0.0f)) wl = new_wl;
                float c = 2.0f * ua.z - 1.0f;
                float sn = sqrtf(fmaxf(0.0f, 1.0f - c * c));
                float p1 = TWO_PI * ua.y;
                float3 nd3 = f3(sn * cosf(p1), sn * sinf(p1), c);
                float c2 = 2.0f * ub.y - 1.0f;
                float s2 = sqrtf(fmaxf(0.0f, 1.0f - c2 * c2));
                float p2 = TWO_PI * ub.x;
                float3 rv = f3(s2 * cosf(p2), s2 * sinf(p2), c2);
                d = nd3;
                pol = normalize(cross(rv, nd3));
                flag = F_RE;
            } else {
                flag = F_AB;
                dead = true;
            }
        } else if (scat) {
            rayleigh(d, pol, rng, blk);
            flag = F_SC;
        } else if (sail) {
            int m2 = h.enter ? nd[4] : nd[1];
            int srf = h.enter ? nd[2] : nd[3];
            boundary = (unsigned int)(nd[5] + 1);
            if (m2 < 0 && srf < 0) {
                flag = F_MI;
                dead = true;
            } else if (srf >= 0) {
                float pd0 = surface_lookup(s, srf, 0, wl);
                float pa = surface_lookup(s, srf, 1, wl);
                float pdf = surface_lookup(s, srf, 3, wl);
                float pd = pa + pd0;
                float pf = pd + pdf;
                float uu = u.z;
                if (uu < pa) {
                    flag = F_SA; dead = true;
                } else if (uu < pd) {
                    flag = F_SD; dead = true;
                    sensor = (unsigned int)(h.enter ? nd[6] : nd[7]);
                    if (face_ids) sensor += (unsigned int)h.face;
                } else if (uu < pf) {
                    lambertian(d, pol, h.normal, rng, blk);
                    flag = F_DR;
                } else {
                    float3 nq = h.normal;
                    d = sub(d, mul(2.0f * dot(d, nq), nq));
                    pol = add(neg(pol), mul(2.0f * dot(pol, nq), nq));
                    flag = F_SR;
                }
            } else {
                float n2 = lookup(s, m2, 0, wl);
                if (n2 == 0.0f || n1 == 0.0f) {  // no RINDEX on one side: Geant4's NoRINDEX
                    flag = F_SA; dead = true;
                } else {
                    bool refl = fresnel(d, pol, h.normal, n1, n2, u.z);
                    flag = refl ? F_BR : F_BT;
                }
            }
        }
        flagmask |= flag;
        int slot = bounce + 1;
        if (slot < 16) seq |= nib(flag) << (4 * slot);
        if (development && slot < maxrec) {
            size_t r0 = ((size_t)local * maxrec + slot) * 2;
            rx[r0] = rec0(pos, t, space_extent, time_max);
            rx[r0 + 1] = rec1(pol, wl, boundary, flag);
        }
        if (dead) break;
    }

    float4 o0 = make_float4(pos.x, pos.y, pos.z, t);
    float4 o1 = make_float4(d.x, d.y, d.z, 1.0f);
    float4 o2 = make_float4(pol.x, pol.y, pol.z, wl);
    float4 o3 = make_float4(__uint_as_float((boundary << 16) | flag), __uint_as_float(sensor),
                            __uint_as_float((unsigned int)(idx & 0xffffffffull)),
                            __uint_as_float(flagmask));
    // Warp-aggregated atomics: in a simple scene most photons share a few flagmasks, and
    // one atomic per photon on the same counter would serialise the whole launch.
    unsigned int lane = threadIdx.x & 31u;
    unsigned int active = __activemask();
    unsigned int peers = __match_any_sync(active, flagmask);
    if (lane == (unsigned int)(__ffs(peers) - 1)) atomicAdd(&fm_hist[flagmask & 0xffffu], __popc(peers));
    bool is_hit = (flagmask & hitmask) == hitmask;
    unsigned int hb = __ballot_sync(active, is_hit);
    if (is_hit) {
        // stream compaction: one atomic per warp reserves slots, only hits leave the device
        unsigned int leader = (unsigned int)(__ffs(hb) - 1);
        unsigned int base = 0;
        if (lane == leader) base = atomicAdd(hit_count, (unsigned int)__popc(hb));
        base = __shfl_sync(hb, base, leader);
        unsigned int i = base + (unsigned int)__popc(hb & ((1u << lane) - 1u));
        hits[4 * (size_t)i] = o0;
        hits[4 * (size_t)i + 1] = o1;
        hits[4 * (size_t)i + 2] = o2;
        hits[4 * (size_t)i + 3] = o3;
    }
    if (development) {
        ox[4 * (size_t)local] = o0;
        ox[4 * (size_t)local + 1] = o1;
        ox[4 * (size_t)local + 2] = o2;
        ox[4 * (size_t)local + 3] = o3;
        seq_out[local] = seq;
    }
}
