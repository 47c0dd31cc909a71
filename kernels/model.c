/* Model loading (format chosen by the file's magic) and release. */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "kernels/errmsg.h"
#include "kernels/model.h"

int rs_model_load(const char *path, const char *tokenizer_path, struct rs_model **out,
		  char *err, size_t err_size)
{
	*out = NULL;
	return rs_errmsg(err, err_size, -ENOSYS, "%s: model loading is not implemented yet", path);
}

void rs_model_free(struct rs_model *model)
{
	if (!model)
		return;
	if (model->mapping)
		munmap(model->mapping, model->mapping_size);
	free(model->owned);
	free(model->layers);
	free(model);
}
