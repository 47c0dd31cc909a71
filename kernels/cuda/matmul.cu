/* The linear layers on the device: one cublasGemmEx per weight matrix per step. */
#include <cerrno>

#include "kernels/cuda/cuda_ops.h"

extern "C" int rs_cuda_matmul(cublasHandle_t handle, float *y, const void *x, const void *w,
			      enum rs_dtype dtype, uint32_t m, uint32_t n, uint32_t k,
			      int accumulate)
{
	cudaDataType_t type;
	switch (dtype) {
	case RS_DTYPE_F32:
		type = CUDA_R_32F;
		break;
	case RS_DTYPE_F16:
		type = CUDA_R_16F;
		break;
	case RS_DTYPE_BF16:
		type = CUDA_R_16BF;
		break;
	default:
		return -EINVAL;
	}
	if (!m || !n || !k)
		return 0;
	float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
	/* cuBLAS is column-major: row-major Y[m][n] is column-major Y^T (n x m), and
	 * Y^T = W X^T with W row-major [n][k] read as column-major k x n, transposed, and
	 * X row-major [m][k] read as column-major k x m. */
	cublasStatus_t st = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k,
					 &alpha, w, type, (int)k, x, type, (int)k, &beta, y,
					 CUDA_R_32F, (int)n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
	return st == CUBLAS_STATUS_SUCCESS ? 0 : -EIO;
}
