/* A tiny helper shared by the loaders: format a message into a caller's error buffer.
 * Loaders return a negative errno and, next to it, a sentence naming what is wrong. */
#ifndef RS_KERNELS_ERRMSG_H
#define RS_KERNELS_ERRMSG_H

#include <stdarg.h>
#include <stdio.h>

/* Write a printf-style message into err (err_size bytes, may be 0 or err NULL), then
 * return code unchanged so that callers can write `return rs_errmsg(err, n, -EINVAL, ...)`. */
__attribute__((format(printf, 4, 5))) static inline int rs_errmsg(char *err, size_t err_size,
								  int code, const char *fmt, ...)
{
	if (err && err_size) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, err_size, fmt, ap);
		va_end(ap);
	}
	return code;
}

#endif
