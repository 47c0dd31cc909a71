/* The linear layers on the device: y[m][n] (+)= x[m][k] w[n][k]^T, fp32 accumulation.
 *
 * Decode multiplies a handful of rows by every weight once per step, so that its speed is
 * the rate at which the weights stream from device memory. For up to GEMV_MAX_ROWS rows
 * our own kernel does that, with the RMSNorm before it folded in (cuBLAS's choices for
 * such shapes reached 40-85% of the copy bandwidth on an H100, and the norm was a launch
 * of its own: docs/perf.md); larger batches go to cublasGemmEx. At 5-16 rows every weight
 * still meets each row once per load, so the rows are held in shared memory in the
 * weights' dtype (they are rounded to it anyway) to fit, and 16 rows of FMAs per weight
 * still keep up with the memory. */
#include <cerrno>
#include <type_traits>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_util.cuh"

/* Rows, warps per block, output columns per warp, 16-byte weight pieces in flight per
 * column and lane, and the shared memory the input rows may take. */
enum { GEMV_MAX_ROWS = 16, GEMV_WARPS = 8, GEMV_COLS = 4, GEMV_UNROLL = 2 };
static const size_t GEMV_MAX_SMEM = 200 * 1024;

/* The element type of the staged input rows: floats up to 4 rows (no conversion in the
 * inner loop), the weights' own type past that (half the shared memory). */
template <typename T, int M> struct gemv_x {
	typedef typename std::conditional<(M > 4), T, float>::type type;
};

/* 16 bytes of T as floats. */
template <typename T> struct vec16 {
	enum { N = 16 / sizeof(T) };
	static __device__ __forceinline__ void unpack(uint4 v, float *f)
	{
		const T *e = reinterpret_cast<const T *>(&v);
#pragma unroll
		for (int i = 0; i < N; i++)
			f[i] = rs_load(e + i);
	}
};

/* v rounded to T and back (what storing the normalized row in T and reading it does). */
template <typename T> __device__ __forceinline__ float round_to(float v);
template <> __device__ __forceinline__ float round_to<float>(float v) { return v; }
template <> __device__ __forceinline__ float round_to<__half>(float v)
{
	return __half2float(__float2half_rn(v));
}
template <> __device__ __forceinline__ float round_to<__nv_bfloat16>(float v)
{
	return __bfloat162float(__float2bfloat16_rn(v));
}

/* Where the kernel's input rows come from: rows of T as they are (GEMV_PLAIN), fp32 rows
 * (gathered through `rows` when not NULL) put through RMSNorm on the way (GEMV_NORM), or
 * SwiGLU of fp32 [gate|up] rows (GEMV_SWIGLU), each rounded to T as rs_cuda_rmsnorm or
 * rs_cuda_swiglu would store it. SwiGLU's values are theirs exactly; the norm's double
 * sum of squares is taken in another order, so its float scale can differ by an ulp. */
enum { GEMV_PLAIN, GEMV_NORM, GEMV_SWIGLU };

template <typename T> struct gemv_input {
	const T *x;                    /* GEMV_PLAIN: [m][k] */
	const float *xf, *norm_weight; /* GEMV_NORM */
	const uint32_t *rows;
	float eps;
	const float *gate_up; /* GEMV_SWIGLU: [m][2k] */
};

/* What the [q|k|v] product's epilogue does besides writing y (rs_cuda_qkv_matmul):
 * RoPE on the q and k columns, and each row's keys and values into its cache slot. */
struct gemv_qkv {
	const uint32_t *positions, *slots; /* per row (host-written metadata) */
	const float2 *cos_sin;             /* rs_op_rope_table: [position][pairs] */
	float *k_cache, *v_cache;          /* [slot][kv_dim] */
	uint32_t q_dim, kv_dim, head_dim, pairs;
};

enum { LOADS = 8 }; /* in flight per thread (rs_load_strided) */

/* The norm weights into w_s: constant, so this runs before rs_pdl_wait, while the kernel
 * before finishes. A thread stores the indices gemv_stage_input will read back. */
__device__ void gemv_stage_norm_weight(float *w_s, const float *norm_weight, uint32_t k)
{
	for (uint32_t i0 = threadIdx.x; i0 < k; i0 += LOADS * blockDim.x) {
		float v[LOADS];
		rs_load_strided(v, norm_weight, i0, k);
#pragma unroll
		for (int u = 0; u < LOADS; u++) {
			uint32_t i = i0 + u * blockDim.x;
			if (i < k)
				w_s[i] = v[u];
		}
	}
}

/* Block prologue: the m input rows in x_s ([m][k] of X), as MODE makes them. They are
 * converted once per block here rather than once per output column. Values are rounded
 * to T as rs_cuda_rmsnorm or rs_cuda_swiglu would store them, so storing them as X = T
 * loses nothing; the norm's unscaled values would lose, so with X != float the norm
 * reads its input twice (sum of squares, then scaled stores) instead of rescaling x_s. */
template <typename T, typename X, int MODE>
__device__ void gemv_stage_input(X *x_s, const float *w_s, const gemv_input<T> &in, uint32_t m,
				 uint32_t k)
{
	__shared__ double reduce[32];
	constexpr bool wide = sizeof(X) == sizeof(float); /* x_s holds unrounded floats */
	for (uint32_t r = 0; r < m; r++) {
		X *xs = x_s + (size_t)r * k;
		const float *xr = MODE == GEMV_NORM ? in.xf + (size_t)(in.rows ? in.rows[r] : r) * k
				  : MODE == GEMV_SWIGLU ? in.gate_up + (size_t)r * 2 * k
							 : NULL;
		double ss = 0.0;
		for (uint32_t i0 = threadIdx.x; i0 < k; i0 += LOADS * blockDim.x) {
			float v[LOADS], up[LOADS];
#pragma unroll
			for (int u = 0; u < LOADS; u++) {
				uint32_t i = i0 + u * blockDim.x;
				v[u] = i >= k		    ? 0.0f
				       : MODE == GEMV_PLAIN ? rs_load(in.x + (size_t)r * k + i)
							    : xr[i];
				up[u] = MODE == GEMV_SWIGLU && i < k ? xr[k + i] : 0.0f;
			}
#pragma unroll
			for (int u = 0; u < LOADS; u++) {
				uint32_t i = i0 + u * blockDim.x;
				if (MODE == GEMV_SWIGLU) /* rs_cuda_swiglu's arithmetic */
					v[u] = round_to<T>(v[u] / (1.0f + expf(-v[u])) * up[u]);
				if (i < k && (MODE != GEMV_NORM || wide))
					rs_store(xs + i, v[u]);
				if (MODE == GEMV_NORM)
					ss += (double)v[u] * v[u];
			}
		}
		if (MODE != GEMV_NORM)
			continue;
		/* rs_cuda_rmsnorm's arithmetic: double sum of squares, float scale. Each thread
		 * rescales the values it stored itself, or reads its own again. */
		ss = rs_block_reduce(ss, rs_op_add(), reduce);
		float scale = (float)(1.0 / sqrt(ss / k + in.eps));
		for (uint32_t i = threadIdx.x; i < k; i += blockDim.x) {
			float v = wide ? rs_load(xs + i) : xr[i];
			rs_store(xs + i, round_to<T>(v * scale * w_s[i]));
		}
	}
	__syncthreads();
}

/* 16 bytes of staged input, piece `piece` of a row, as floats (V::N of them). */
template <typename T, typename X> struct gemv_x_piece {
	static __device__ __forceinline__ void load(float *f, const X *row, uint32_t piece)
	{
		enum { N = vec16<T>::N };
		if constexpr (sizeof(X) == sizeof(float)) {
			const float4 *p = reinterpret_cast<const float4 *>(row + (size_t)piece * N);
#pragma unroll
			for (int q = 0; q < N / 4; q++) {
				float4 v = p[q];
				f[4 * q] = v.x, f[4 * q + 1] = v.y, f[4 * q + 2] = v.z, f[4 * q + 3] = v.w;
			}
		} else {
			vec16<X>::unpack(reinterpret_cast<const uint4 *>(row)[piece], f);
		}
	}
};

/* Block: GEMV_WARPS warps; a warp computes GEMV_COLS adjacent output columns over one of
 * `splits` ranges of k, and a block's warps cover GEMV_WARPS / splits such column groups.
 * Each lane streams the columns' weight rows in 16-byte pieces (GEMV_COLS x GEMV_UNROLL
 * in flight), multiplies each piece by the same piece of the (at most M) input rows held
 * in shared memory, and the warp reduces at the end; the splits' sums are added in a
 * fixed order. Rows are 16-byte aligned (the caller checks k). With QKV the outputs
 * are [q|k|v] rows, rotated and stored as gemv_qkv says (accumulate is 0). */
template <typename T, int M, int MODE, bool QKV>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
gemv_kernel(float *__restrict__ y, gemv_input<T> in, gemv_qkv qkv, const T *__restrict__ w,
	    uint32_t m, uint32_t n, uint32_t k, uint32_t splits, int accumulate)
{
	typedef vec16<T> V;
	typedef typename gemv_x<T, M>::type X;
	/* [m][k] of X, then (GEMV_NORM) the norm weights [k] as floats; read by 16 bytes
	 * (rows of k elements of T are whole 16-byte pieces, so are rows of floats) */
	extern __shared__ __align__(16) unsigned char gemv_smem[];
	X *x_s = reinterpret_cast<X *>(gemv_smem);
	__shared__ float partial[GEMV_WARPS][M][GEMV_COLS];
	rs_pdl_trigger(); /* the next kernel may prefetch its own weights meanwhile */

	unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	uint32_t col0 = (blockIdx.x * (GEMV_WARPS / splits) + warp / splits) * GEMV_COLS;
	uint32_t split = warp % splits, pieces = k / V::N;
	uint32_t per_split = (pieces + splits - 1) / splits, begin = split * per_split;
	uint32_t end = begin + per_split < pieces ? begin + per_split : pieces;
	/* Columns past n read column n - 1 again (in bounds) and are not written. */
	const uint4 *wr[GEMV_COLS];
#pragma unroll
	for (int c = 0; c < GEMV_COLS; c++)
		wr[c] = reinterpret_cast<const uint4 *>(
			w + (size_t)(col0 + c < n ? col0 + c : n - 1) * k);
	/* The first weights are requested before anything else: while they arrive, the
	 * kernel before this one finishes (rs_pdl_wait) and the input rows are staged. */
	uint4 next[GEMV_UNROLL][GEMV_COLS];
	uint32_t i = begin + lane;
#pragma unroll
	for (int u = 0; u < GEMV_UNROLL; u++)
#pragma unroll
		for (int c = 0; c < GEMV_COLS; c++)
			if (i + 32 * u < end)
				next[u][c] = __ldg(wr[c] + i + 32 * u);
	float *w_s = reinterpret_cast<float *>(x_s + (size_t)m * k);
	if (MODE == GEMV_NORM)
		gemv_stage_norm_weight(w_s, in.norm_weight, k);
	rs_pdl_wait();
	gemv_stage_input<T, X, MODE>(x_s, w_s, in, m, k);

	float acc[M][GEMV_COLS];
#pragma unroll
	for (int r = 0; r < M; r++)
#pragma unroll
		for (int c = 0; c < GEMV_COLS; c++)
			acc[r][c] = 0.0f;
	for (; i < end; i += 32 * GEMV_UNROLL) {
		uint4 wv[GEMV_UNROLL][GEMV_COLS];
		uint32_t ahead = i + 32 * GEMV_UNROLL;
#pragma unroll
		for (int u = 0; u < GEMV_UNROLL; u++)
#pragma unroll
			for (int c = 0; c < GEMV_COLS; c++) {
				wv[u][c] = next[u][c];
				if (ahead + 32 * u < end)
					next[u][c] = __ldg(wr[c] + ahead + 32 * u);
			}
#pragma unroll
		for (int u = 0; u < GEMV_UNROLL; u++) {
			uint32_t piece = i + 32 * u;
			if (piece >= end)
				break;
			float wf[GEMV_COLS][V::N];
#pragma unroll
			for (int c = 0; c < GEMV_COLS; c++)
				V::unpack(wv[u][c], wf[c]);
#pragma unroll
			for (int r = 0; r < M; r++) {
				if (r >= (int)m)
					break;
				float xf[V::N];
				gemv_x_piece<T, X>::load(xf, x_s + (size_t)r * k, piece);
#pragma unroll
				for (int e = 0; e < V::N; e++)
#pragma unroll
					for (int c = 0; c < GEMV_COLS; c++)
						acc[r][c] = fmaf(wf[c][e], xf[e], acc[r][c]);
			}
		}
	}
	/* Lane (r, c) of the group's first warp (split 0) writes y[r][col0 + c], for r in
	 * steps of the 32 / GEMV_COLS rows a pass covers (every lane runs every pass: the
	 * RoPE exchange below is a whole-warp shuffle). */
	enum { PASS_ROWS = 32 / GEMV_COLS, PASSES = (M + PASS_ROWS - 1) / PASS_ROWS };
	uint32_t c = lane % GEMV_COLS, col = col0 + c;
	/* The epilogue's metadata, requested now: the reductions hide its latency. */
	uint32_t slot[PASSES];
	bool rotate[PASSES];
	float2 cs[PASSES];
#pragma unroll
	for (int pass = 0; pass < PASSES; pass++) {
		uint32_t r = pass * PASS_ROWS + lane / GEMV_COLS, d = QKV ? col % qkv.head_dim : 0;
		bool live = QKV && split == 0 && r < m && col < n;
		slot[pass] = live ? qkv.slots[r] : 0;
		rotate[pass] = live && col < qkv.q_dim + qkv.kv_dim && d / 2 < qkv.pairs;
		cs[pass] = rotate[pass] ? qkv.cos_sin[(size_t)qkv.positions[r] * qkv.pairs + d / 2]
					: make_float2(1.0f, 0.0f);
	}
#pragma unroll
	for (int rr = 0; rr < M; rr++)
#pragma unroll
		for (int cc = 0; cc < GEMV_COLS; cc++) {
			float sum = rs_warp_sum(acc[rr][cc]);
			if (lane == 0)
				partial[warp][rr][cc] = sum;
		}
	__syncthreads();
	if (split != 0)
		return; /* the whole warp */
#pragma unroll
	for (int pass = 0; pass < PASSES; pass++) {
		uint32_t r = pass * PASS_ROWS + lane / GEMV_COLS;
		bool live = r < m && col < n;
		float s = 0.0f;
		for (uint32_t z = 0; live && z < splits; z++)
			s += partial[warp + z][r][c];
		if (QKV) {
			/* Columns 2i and 2i + 1 of a head are a RoPE pair: lanes c and c ^ 1 of
			 * row r (col0 is a multiple of GEMV_COLS and heads have an even size, so
			 * the column's parity is c's). */
			float other = __shfl_xor_sync(0xffffffffu, s, 1);
			if (!live)
				continue;
			if (rotate[pass])
				s = c & 1 ? rs_rope_rotate(other, s, cs[pass].x, cs[pass].y, 1)
					  : rs_rope_rotate(s, other, cs[pass].x, cs[pass].y, 0);
			if (col >= qkv.q_dim + qkv.kv_dim)
				qkv.v_cache[(size_t)slot[pass] * qkv.kv_dim +
					    (col - qkv.q_dim - qkv.kv_dim)] = s;
			else if (col >= qkv.q_dim)
				qkv.k_cache[(size_t)slot[pass] * qkv.kv_dim + (col - qkv.q_dim)] = s;
			y[(size_t)r * n + col] = s;
			continue;
		}
		if (!live)
			continue;
		float *yp = y + (size_t)r * n + col;
		*yp = accumulate ? *yp + s : s;
	}
}

/* k-splits per column group: the fewest that give about a wave of blocks (two per SM of
 * an H100, the most its registers allow), since every block pays for staging the input;
 * each split keeps at least one piece per lane. */
static uint32_t gemv_splits(uint32_t n, uint32_t pieces)
{
	uint32_t splits = 1, groups = (n + GEMV_COLS - 1) / GEMV_COLS;
	while (splits < GEMV_WARPS && (size_t)groups * splits / GEMV_WARPS < 200 &&
	       pieces / (2 * splits) >= 32)
		splits *= 2;
	return splits;
}

/* The dynamic shared memory the kernel may take: past 48 KiB a kernel must opt in, up
 * to what the device allows beside its static shared memory. Once per kernel (a
 * function-local static: initialized once, thread-safe, by C++11's rules), at engine
 * creation (rs_cuda_matmul_setup), not inside a stream capture. */
template <typename T, int M, int MODE, bool QKV> static size_t gemv_smem_limit()
{
	static const size_t limit = [] {
		auto kernel = gemv_kernel<T, M, MODE, QKV>;
		int device = 0, optin = 0;
		cudaFuncAttributes attr;
		if (cudaGetDevice(&device) != cudaSuccess ||
		    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
					   device) != cudaSuccess ||
		    cudaFuncGetAttributes(&attr, kernel) != cudaSuccess ||
		    (size_t)optin <= attr.sharedSizeBytes) {
			cudaGetLastError(); /* ours: not the next launch check's */
			return (size_t)48 * 1024;
		}
		size_t allowed = (size_t)optin - attr.sharedSizeBytes;
		allowed = allowed < GEMV_MAX_SMEM ? allowed : GEMV_MAX_SMEM;
		if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
					 (int)allowed) == cudaSuccess)
			return allowed;
		cudaGetLastError();
		return (size_t)48 * 1024;
	}();
	return limit;
}

template <typename T, int M> static void gemv_setup_rows()
{
	gemv_smem_limit<T, M, GEMV_PLAIN, false>();
	gemv_smem_limit<T, M, GEMV_NORM, false>();
	gemv_smem_limit<T, M, GEMV_SWIGLU, false>();
	gemv_smem_limit<T, M, GEMV_NORM, true>();
}

template <typename T> static void gemv_setup_type()
{
	gemv_setup_rows<T, 1>();
	gemv_setup_rows<T, 2>();
	gemv_setup_rows<T, 4>();
	gemv_setup_rows<T, 8>();
	gemv_setup_rows<T, 16>();
}

extern "C" void rs_cuda_matmul_setup(void)
{
	gemv_setup_type<float>();
	gemv_setup_type<__half>();
	gemv_setup_type<__nv_bfloat16>();
}

template <typename T, int M, int MODE, bool QKV>
static int gemv_launch(float *y, const gemv_input<T> &in, const gemv_qkv &qkv, const T *w,
			uint32_t m, uint32_t n, uint32_t k, int accumulate, cudaStream_t stream)
{
	uint32_t splits = gemv_splits(n, k / vec16<T>::N);
	uint32_t cols = GEMV_WARPS / splits * GEMV_COLS;
	size_t smem = (size_t)m * k * sizeof(typename gemv_x<T, M>::type) +
		      (MODE == GEMV_NORM ? (size_t)k * sizeof(float) : 0);
	if (smem > gemv_smem_limit<T, M, MODE, QKV>())
		return -ENOTSUP; /* the caller takes the unfused path or cuBLAS */
	return rs_launch(gemv_kernel<T, M, MODE, QKV>, dim3((n + cols - 1) / cols),
			 dim3(GEMV_WARPS * 32), smem, stream, y, in, qkv, w, m, n, k, splits,
			 accumulate);
}

template <typename T, int MODE, bool QKV = false>
static int gemv(float *y, const gemv_input<T> &in, const void *w, uint32_t m, uint32_t n,
		uint32_t k, int accumulate, cudaStream_t stream, const gemv_qkv &qkv = gemv_qkv())
{
	const T *wt = (const T *)w;
	if (m == 1)
		return gemv_launch<T, 1, MODE, QKV>(y, in, qkv, wt, m, n, k, accumulate, stream);
	if (m == 2)
		return gemv_launch<T, 2, MODE, QKV>(y, in, qkv, wt, m, n, k, accumulate, stream);
	if (m <= 4)
		return gemv_launch<T, 4, MODE, QKV>(y, in, qkv, wt, m, n, k, accumulate, stream);
	if (m <= 8)
		return gemv_launch<T, 8, MODE, QKV>(y, in, qkv, wt, m, n, k, accumulate, stream);
	return gemv_launch<T, 16, MODE, QKV>(y, in, qkv, wt, m, n, k, accumulate, stream);
}

static int gemm_type(enum rs_dtype dtype, cudaDataType_t *type)
{
	switch (dtype) {
	case RS_DTYPE_F32:
		*type = CUDA_R_32F;
		return 0;
	case RS_DTYPE_F16:
		*type = CUDA_R_16F;
		return 0;
	case RS_DTYPE_BF16:
		*type = CUDA_R_16BF;
		return 0;
	default:
		return -EINVAL;
	}
}

/* Whether our kernel takes the product: few rows, rows of k elements that are a whole
 * number of 16-byte pieces (the buffers themselves come from cudaMalloc, 256-byte
 * aligned; w checked, as it may point into a fused matrix), and input rows (and norm
 * weights) that fit its shared memory (gemv_x; the launch checks the device's limit). */
static bool use_gemv(enum rs_dtype dtype, uint32_t m, uint32_t k, const void *w, bool norm)
{
	size_t x_elem = m > 4 ? rs_dtype_size(dtype) : sizeof(float);
	return m <= GEMV_MAX_ROWS && (size_t)k * rs_dtype_size(dtype) % 16 == 0 &&
	       (uintptr_t)w % 16 == 0 &&
	       (size_t)m * k * x_elem + (norm ? (size_t)k * sizeof(float) : 0) <= GEMV_MAX_SMEM;
}

/* What every entry point checks first: 1 when there is nothing to do (an empty product),
 * 0 to go on with the GEMM type and the handle's stream, or a negative errno. */
static int begin_product(cublasHandle_t handle, enum rs_dtype dtype, uint32_t m, uint32_t n,
			 uint32_t k, cudaDataType_t *type, cudaStream_t *stream)
{
	if (gemm_type(dtype, type))
		return -EINVAL;
	if (!m || !n || !k)
		return 1;
	return cublasGetStream(handle, stream) == CUBLAS_STATUS_SUCCESS ? 0 : -EIO;
}

extern "C" int rs_cuda_matmul(cublasHandle_t handle, float *y, const void *x, const void *w,
			      enum rs_dtype dtype, uint32_t m, uint32_t n, uint32_t k,
			      int accumulate)
{
	cudaDataType_t type;
	cudaStream_t stream;
	int rc = begin_product(handle, dtype, m, n, k, &type, &stream);
	if (rc)
		return rc < 0 ? rc : 0;
	if (use_gemv(dtype, m, k, w, false)) {
		RS_DISPATCH_DTYPE(dtype, T, gemv_input<T> in = {}; in.x = (const T *)x;
				  rc = gemv<T, GEMV_PLAIN>(y, in, w, m, n, k, accumulate, stream));
		if (rc != -ENOTSUP)
			return rc;
	}
	float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
	/* cuBLAS is column-major: row-major Y[m][n] is column-major Y^T (n x m), and
	 * Y^T = W X^T with W row-major [n][k] read as column-major k x n, transposed, and
	 * X row-major [m][k] read as column-major k x m. */
	cublasStatus_t st = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k,
					 &alpha, w, type, (int)k, x, type, (int)k, &beta, y,
					 CUDA_R_32F, (int)n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
	return st == CUBLAS_STATUS_SUCCESS ? 0 : -EIO;
}

extern "C" int rs_cuda_norm_matmul(cublasHandle_t handle, float *y, const float *x,
				   const uint32_t *rows, const float *norm_weight, float eps,
				   void *xb, const void *w, enum rs_dtype dtype, uint32_t m,
				   uint32_t n, uint32_t k, int accumulate)
{
	cudaDataType_t type;
	cudaStream_t stream;
	int rc = begin_product(handle, dtype, m, n, k, &type, &stream);
	if (rc)
		return rc < 0 ? rc : 0;
	if (use_gemv(dtype, m, k, w, true)) {
		RS_DISPATCH_DTYPE(dtype, T, gemv_input<T> in = {};
				  in.xf = x, in.rows = rows, in.norm_weight = norm_weight, in.eps = eps;
				  rc = gemv<T, GEMV_NORM>(y, in, w, m, n, k, accumulate, stream));
		if (rc != -ENOTSUP)
			return rc;
	}
	rc = rs_cuda_rmsnorm(xb, dtype, x, rows, norm_weight, m, k, eps, stream);
	return rc ? rc : rs_cuda_matmul(handle, y, xb, w, dtype, m, n, k, accumulate);
}

extern "C" int rs_cuda_qkv_matmul(cublasHandle_t handle, float *qkv, const float *x,
				  const float *norm_weight, float eps, void *xb, const void *w,
				  enum rs_dtype dtype, uint32_t m, uint32_t k, uint32_t n_heads,
				  const struct rs_cuda_kv_layer *kv, uint32_t rope_dim,
				  const float *cos_sin, const uint32_t *positions,
				  const uint32_t *slots)
{
	uint32_t hd = kv->head_dim, q_dim = n_heads * hd, kv_dim = kv->n_kv_heads * hd;
	uint32_t n = q_dim + 2 * kv_dim;
	if (rope_dim > hd)
		return -EINVAL;
	cudaDataType_t type;
	cudaStream_t stream;
	int rc = begin_product(handle, dtype, m, n, k, &type, &stream);
	if (rc)
		return rc < 0 ? rc : 0;
	/* Rope pairs sit in adjacent lanes only when heads have an even size. */
	if (hd % 2 == 0 && use_gemv(dtype, m, k, w, true)) {
		gemv_qkv out = {positions, slots, (const float2 *)cos_sin, kv->k, kv->v,
				q_dim, kv_dim, hd, rope_dim / 2};
		RS_DISPATCH_DTYPE(dtype, T, gemv_input<T> in = {};
				  in.xf = x, in.norm_weight = norm_weight, in.eps = eps;
				  rc = gemv<T, GEMV_NORM, true>(qkv, in, w, m, n, k, 0, stream, out));
		if (rc != -ENOTSUP)
			return rc;
	}
	rc = rs_cuda_norm_matmul(handle, qkv, x, NULL, norm_weight, eps, xb, w, dtype, m, n, k, 0);
	return rc ? rc
		  : rs_cuda_rope_kv_store(qkv, n, positions, slots, m, n_heads, kv, rope_dim,
					  cos_sin, stream);
}

extern "C" int rs_cuda_swiglu_matmul(cublasHandle_t handle, float *y, const float *gate_up,
				     void *hidden, const void *w, enum rs_dtype dtype, uint32_t m,
				     uint32_t n, uint32_t k, int accumulate)
{
	cudaDataType_t type;
	cudaStream_t stream;
	int rc = begin_product(handle, dtype, m, n, k, &type, &stream);
	if (rc)
		return rc < 0 ? rc : 0;
	if (use_gemv(dtype, m, k, w, false)) {
		RS_DISPATCH_DTYPE(dtype, T, gemv_input<T> in = {}; in.gate_up = gate_up;
				  rc = gemv<T, GEMV_SWIGLU>(y, in, w, m, n, k, accumulate, stream));
		if (rc != -ENOTSUP)
			return rc;
	}
	rc = rs_cuda_swiglu(hidden, dtype, gate_up, m, k, stream);
	return rc ? rc : rs_cuda_matmul(handle, y, hidden, w, dtype, m, n, k, accumulate);
}
