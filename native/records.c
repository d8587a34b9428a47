/*
 * AES-128-GCM for tunnel records, sealed into the frame: the same records as
 * protocol/tunnel-stream.ts seals with node:crypto, without the three
 * allocations and two copies node:crypto makes per call (an output buffer,
 * a second one of the exact length, zero-filled, and a copy into it; then
 * ours into the frame): one output buffer, not zero-filled, when opening. Uses the OpenSSL that node itself links and
 * exports, so nothing to install.
 *
 *   seal(key, seq, out, aadLength, parts) -> length written
 *     encrypts the buffers of `parts` into out[aadLength ..], the tag after
 *     them; out[0 .. aadLength) is the additional authenticated data.
 *   open(key, seq, record, aadLength, out) -> true when authentic
 *     decrypts the out.length bytes at record[aadLength ..] into out,
 *     checking the tag that follows them. (Not in place: the record is a
 *     view of a WebSocket message the plaintext would then share.)
 *
 * The IV is the record's sequence number: 4 zero bytes, then the number
 * as 8 bytes big-endian (a JavaScript number: exact below 2^53).
 */
#include <node_api.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_BYTES 16
#define IV_BYTES 12
#define TAG_BYTES 16

typedef struct {
  EVP_CIPHER_CTX *enc;
  EVP_CIPHER_CTX *dec;
} contexts;

static void free_contexts (napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  contexts *c = data;
  EVP_CIPHER_CTX_free(c->enc);
  EVP_CIPHER_CTX_free(c->dec);
  free(c);
}

static napi_value fail (napi_env env, const char *why) {
  napi_throw_type_error(env, "RG_ERR_INTERNAL", why);
  return NULL;
}

static int buffer_arg (napi_env env, napi_value v, uint8_t **data, size_t *length) {
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return 0;
  return napi_get_buffer_info(env, v, (void **)data, length) == napi_ok;
}

static int iv_arg (napi_env env, napi_value v, uint8_t iv[IV_BYTES]) {
  double seq;
  if (napi_get_value_double(env, v, &seq) != napi_ok || seq < 0 || seq > 9007199254740991.0) return 0;
  uint64_t n = (uint64_t)seq;
  memset(iv, 0, 4);
  for (int i = 11; i >= 4; i--) { iv[i] = n & 0xff; n >>= 8; }
  return 1;
}

static int key_arg (napi_env env, napi_value v, uint8_t **key) {
  size_t length;
  return buffer_arg(env, v, key, &length) && length == KEY_BYTES;
}

static int index_arg (napi_env env, napi_value v, size_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d < 0 || d > 4294967295.0 || d != (double)(uint32_t)d) return 0;
  *out = (size_t)d;
  return 1;
}

/* What seal and open take alike: key, seq, a buffer and the AAD's length at its start; argv[4] is their own. */
typedef struct {
  contexts *c;
  napi_value argv[5];
  uint8_t *key, iv[IV_BYTES], *buf;
  size_t length, aad;
} record_args;

static int record_args_of (napi_env env, napi_callback_info info, record_args *a) {
  size_t argc = 5;
  return napi_get_cb_info(env, info, &argc, a->argv, NULL, (void **)&a->c) == napi_ok && argc == 5 &&
    key_arg(env, a->argv[0], &a->key) && iv_arg(env, a->argv[1], a->iv) &&
    buffer_arg(env, a->argv[2], &a->buf, &a->length) && index_arg(env, a->argv[3], &a->aad) && a->aad <= a->length;
}

static napi_value seal (napi_env env, napi_callback_info info) {
  record_args a;
  if (!record_args_of(env, info, &a)) return fail(env, "seal: bad arguments (key, seq, out, aadLength, parts)");
  contexts *c = a.c;
  uint8_t *key = a.key, *iv = a.iv, *out = a.buf;
  size_t outLength = a.length, aad = a.aad;
  napi_value *argv = a.argv;
  uint32_t count;
  bool isArray;
  if (napi_is_array(env, argv[4], &isArray) != napi_ok || !isArray || napi_get_array_length(env, argv[4], &count) != napi_ok) return fail(env, "seal: parts must be an array of buffers");
  EVP_CIPHER_CTX *ctx = c->enc;
  int n;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, key, iv) != 1) return fail(env, "seal: cipher init failed");
  if (aad > 0 && EVP_EncryptUpdate(ctx, NULL, &n, out, (int)aad) != 1) return fail(env, "seal: aad failed");
  size_t at = aad;
  for (uint32_t i = 0; i < count; i++) {
    napi_value part;
    uint8_t *data;
    size_t length;
    if (napi_get_element(env, argv[4], i, &part) != napi_ok || !buffer_arg(env, part, &data, &length)) return fail(env, "seal: parts must be an array of buffers");
    if (length == 0) continue;
    if (length > outLength - at || outLength - at - length < TAG_BYTES) return fail(env, "seal: out is too short");
    if (EVP_EncryptUpdate(ctx, out + at, &n, data, (int)length) != 1) return fail(env, "seal: encrypt failed");
    at += (size_t)n;
  }
  if (outLength - at < TAG_BYTES) return fail(env, "seal: out is too short");
  if (EVP_EncryptFinal_ex(ctx, out + at, &n) != 1) return fail(env, "seal: final failed");
  at += (size_t)n;
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, out + at) != 1) return fail(env, "seal: tag failed");
  napi_value result;
  napi_create_uint32(env, (uint32_t)(at + TAG_BYTES), &result);
  return result;
}

static napi_value open_record (napi_env env, napi_callback_info info) {
  record_args a;
  uint8_t *out;
  size_t length;
  if (!record_args_of(env, info, &a) || !buffer_arg(env, a.argv[4], &out, &length)) return fail(env, "open: bad arguments (key, seq, record, aadLength, out)");
  contexts *c = a.c;
  uint8_t *key = a.key, *iv = a.iv, *record = a.buf;
  size_t recordLength = a.length, aad = a.aad;
  if (length > recordLength - aad || recordLength - aad - length < TAG_BYTES) return fail(env, "open: record is too short");
  EVP_CIPHER_CTX *ctx = c->dec;
  int n, ok = 1;
  ok = ok && EVP_DecryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, key, iv) == 1;
  ok = ok && (aad == 0 || EVP_DecryptUpdate(ctx, NULL, &n, record, (int)aad) == 1);
  ok = ok && (length == 0 || EVP_DecryptUpdate(ctx, out, &n, record + aad, (int)length) == 1);
  ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, record + aad + length) == 1;
  ok = ok && EVP_DecryptFinal_ex(ctx, out + length, &n) == 1;
  napi_value result;
  napi_get_boolean(env, ok, &result);
  return result;
}

NAPI_MODULE_INIT () {
  contexts *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->enc = EVP_CIPHER_CTX_new();
  c->dec = EVP_CIPHER_CTX_new();
  if (c->enc == NULL || c->dec == NULL || napi_set_instance_data(env, c, free_contexts, NULL) != napi_ok) {
    free_contexts(env, c, NULL);
    return NULL;
  }
  napi_property_descriptor props[] = {
    { "seal", NULL, seal, NULL, NULL, NULL, napi_default, c },
    { "open", NULL, open_record, NULL, NULL, NULL, napi_default, c }
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}
