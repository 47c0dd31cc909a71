// The official `openai` npm package against ringserve-openai (make test-openai-node):
// a completion and a chat completion, plain and streamed, greedy, so plain and streamed
// must give the same text; an unknown key must raise the package's AuthenticationError.
// Usage: node openai_bridge.mjs BASE_URL KEY MODEL  (OPENAI_PACKAGE_DIR: where openai is)
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';

const [baseURL, apiKey, model] = process.argv.slice(2);
const require = createRequire(process.env.OPENAI_PACKAGE_DIR + '/');
const OpenAI = require('openai').default ?? require('openai');
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const completion = await client.completions.create({
  model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0, ignore_eos: true,
});
assert.equal(completion.object, 'text_completion');
assert.equal(completion.usage.completion_tokens, 24);
const text = completion.choices[0].text;

let streamed = '';
const stream = await client.completions.create({
  model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0, ignore_eos: true,
  stream: true,
});
for await (const chunk of stream) streamed += chunk.choices[0]?.text ?? '';
assert.equal(streamed, text, 'streamed completion differs from the plain one');

const messages = [{ role: 'user', content: 'Tell me a story.' }];
const chat = await client.chat.completions.create({
  model, messages, max_tokens: 16, temperature: 0, ignore_eos: true,
});
assert.equal(chat.choices[0].message.role, 'assistant');
let chatStreamed = '';
const chatStream = await client.chat.completions.create({
  model, messages, max_tokens: 16, temperature: 0, ignore_eos: true, stream: true,
  stream_options: { include_usage: true },
});
let usage = null;
for await (const chunk of chatStream) {
  chatStreamed += chunk.choices[0]?.delta?.content ?? '';
  if (chunk.usage) usage = chunk.usage;
}
assert.equal(chatStreamed, chat.choices[0].message.content, 'streamed chat differs');
assert.equal(usage.completion_tokens, 16);

const models = await client.models.list();
assert.equal(models.data[0].id, model);

const stranger = new OpenAI({ baseURL, apiKey: 'sk-unknown-key-000', maxRetries: 0 });
await assert.rejects(stranger.models.list(), (err) => err instanceof OpenAI.AuthenticationError
  && err.status === 401 && err.code === 'invalid_api_key');

const missing = client.completions.create({ model: 'no-such-model', prompt: 'hi' });
await assert.rejects(missing, (err) => err instanceof OpenAI.NotFoundError);

console.log(`openai (npm) against the bridge: completion ${JSON.stringify(text)}; all checks passed`);
