/* Chat on a connection: the model's template and end tokens from the shared segment, and
 * a conversation tokenized with special tokens read in the template's text only. */
#include <errno.h>
#include <string.h>

#include "client-lib/chat_template.h"
#include "client-lib/connection.h"

int rs_chat_model_template(struct rs_connection *conn, const char **jinja, size_t *len)
{
	const struct rs_shared_header *model = conn->model;
	/* Read each word once: checked at connect, but the mapping is the daemon's. */
	uint64_t offset = model->chat_template_offset, bytes = model->chat_template_bytes;
	*jinja = NULL;
	if (len)
		*len = 0;
	if (offset == 0)
		return -ENOENT;
	if (offset > conn->model_size || bytes >= conn->model_size - offset)
		return -EPROTO;
	const char *text = (const char *)model + offset;
	if (text[bytes] != '\0')
		return -EPROTO;
	*jinja = text;
	if (len)
		*len = (size_t)bytes;
	int tmpl = rs_chat_template_detect(text, (size_t)bytes);
	return tmpl > 0 ? tmpl : -ENOTSUP;
}

int rs_chat_end_tokens(struct rs_connection *conn, const uint32_t **ids)
{
	uint32_t n = conn->model->n_end_tokens;
	*ids = conn->model->end_tokens;
	return (int)(n <= RS_MAX_END_TOKENS ? n : RS_MAX_END_TOKENS);
}

int rs_chat_tokenize(struct rs_connection *conn, int tmpl, const struct rs_chat_message *messages,
		     size_t n, unsigned flags, uint32_t *ids, uint32_t max_ids)
{
	if (!ids && max_ids)
		return -EINVAL;
	if (tmpl == RS_CHAT_TEMPLATE_MODEL) {
		const char *jinja;
		tmpl = rs_chat_model_template(conn, &jinja, NULL);
		if (tmpl < 0)
			return tmpl;
	}
	struct rs_chat_text text = {0};
	int ret = rs_chat_render(tmpl, messages, n, flags, &text);
	if (ret)
		return ret;
	ret = rs_conn_tokenize(conn, text.text, text.len, (const size_t(*)[2])text.content,
			       text.n_content, RS_TOKENIZE_SPECIAL, ids, max_ids);
	rs_chat_text_free(&text);
	return ret;
}
