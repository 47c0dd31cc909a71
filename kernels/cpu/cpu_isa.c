/* The instruction set the CPU kernels may use (rs_cpu_isa in ops.h). */
#include <stdatomic.h>

#include "kernels/cpu/ops.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

enum rs_cpu_isa rs_cpu_isa(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	/* A load and a bit test (libgcc fills the feature words before main); it also
	 * checks that the OS saves the vector registers. */
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
		return RS_ISA_AVX512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return RS_ISA_AVX2;
#endif
	return RS_ISA_PORTABLE;
}

bool rs_cpu_has_f16c(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	/* CPUID leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports has no "f16c"). The
	 * kernels use it only at the AVX2 level, whose OS support rs_cpu_isa checked. Read
	 * once: every product asks, and CPUID traps to the hypervisor in a VM. Relaxed: any
	 * thread that reads it computes the same value. */
	static _Atomic int known = -1;
	int f16c = atomic_load_explicit(&known, memory_order_relaxed);
	if (f16c < 0) {
		unsigned eax, ebx, ecx, edx;
		f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
		atomic_store_explicit(&known, f16c, memory_order_relaxed);
	}
	return f16c;
#else
	return false;
#endif
}
