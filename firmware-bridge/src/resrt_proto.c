#include "resrt_proto.h"

#include <string.h>

/* ---- little-endian ------------------------------------------------------------------------- */

void rp_put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v & 0xFFu);
  p[1] = (uint8_t)(v >> 8);
}

void rp_put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v & 0xFFu);
  p[1] = (uint8_t)((v >> 8) & 0xFFu);
  p[2] = (uint8_t)((v >> 16) & 0xFFu);
  p[3] = (uint8_t)(v >> 24);
}

void rp_put_u64(uint8_t *p, uint64_t v) {
  rp_put_u32(p, (uint32_t)(v & 0xFFFFFFFFu));
  rp_put_u32(p + 4, (uint32_t)(v >> 32));
}

/* memcpy through uint32_t keeps the bit pattern (NaN payloads included) on any endianness. */
void rp_put_f32(uint8_t *p, float v) {
  uint32_t bits;
  memcpy(&bits, &v, sizeof bits);
  rp_put_u32(p, bits);
}

uint16_t rp_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }

uint32_t rp_get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

uint64_t rp_get_u64(const uint8_t *p) {
  return (uint64_t)rp_get_u32(p) | ((uint64_t)rp_get_u32(p + 4) << 32);
}

float rp_get_f32(const uint8_t *p) {
  uint32_t bits = rp_get_u32(p);
  float v;
  memcpy(&v, &bits, sizeof v);
  return v;
}

/* ---- CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor ---------------- */

uint16_t rp_crc16_update(uint16_t crc, const uint8_t *data, size_t len) {
  size_t i;
  int b;
  for (i = 0; i < len; i++) {
    crc ^= (uint16_t)((uint16_t)data[i] << 8);
    for (b = 0; b < 8; b++) {
      crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
  }
  return crc;
}

uint16_t rp_crc16(const uint8_t *data, size_t len) { return rp_crc16_update(0xFFFFu, data, len); }

/* ---- COBS ---------------------------------------------------------------------------------- */

size_t rp_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap) {
  size_t o = 1, code_idx = 0, i;
  uint8_t code = 1;
  if (cap < 1) return 0;
  for (i = 0; i < len; i++) {
    if (src[i] == 0) {
      dst[code_idx] = code;
      if (o >= cap) return 0;
      code_idx = o++;
      code = 1;
    } else {
      if (o >= cap) return 0;
      dst[o++] = src[i];
      code++;
      /* A full block only opens a new one when more input follows: the minimal encoding. */
      if (code == 0xFF && i + 1 < len) {
        dst[code_idx] = code;
        if (o >= cap) return 0;
        code_idx = o++;
        code = 1;
      }
    }
  }
  dst[code_idx] = code;
  return o;
}

int rp_cobs_decode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len) {
  size_t i = 0, o = 0;
  while (i < len) {
    uint8_t code = src[i++];
    uint8_t k;
    if (code == 0) return -1;
    for (k = 1; k < code; k++) {
      if (i >= len || src[i] == 0 || o >= cap) return -1;
      dst[o++] = src[i++];
    }
    if (code != 0xFF && i < len) {
      if (o >= cap) return -1;
      dst[o++] = 0;
    }
  }
  *out_len = o;
  return 0;
}

/* ---- frames -------------------------------------------------------------------------------- */

size_t rp_frame_serialize(const rp_frame_t *f, uint8_t *raw) {
  size_t n = RP_HEADER_SIZE + f->len;
  uint16_t crc;
  raw[0] = f->version;
  raw[1] = f->type;
  rp_put_u16(raw + 2, f->seq);
  raw[4] = f->flags;
  memcpy(raw + RP_HEADER_SIZE, f->payload, f->len);
  crc = rp_crc16(raw, n);
  rp_put_u16(raw + n, crc);
  return n + RP_CRC_SIZE;
}

size_t rp_wire_from_raw(const uint8_t *raw, size_t n, uint8_t *wire, size_t cap) {
  size_t enc;
  if (cap < 2) return 0;
  enc = rp_cobs_encode(raw, n, wire, cap - 1);
  if (enc == 0) return 0;
  wire[enc] = 0;
  return enc + 1;
}

size_t rp_frame_encode(const rp_frame_t *f, uint8_t *wire, size_t cap) {
  uint8_t raw[RP_MAX_FRAME];
  size_t n;
  if (f->len > RP_MAX_PAYLOAD) return 0;
  n = rp_frame_serialize(f, raw);
  return rp_wire_from_raw(raw, n, wire, cap);
}

int rp_frame_parse(const uint8_t *raw, size_t n, rp_frame_t *out) {
  uint16_t want;
  if (n < RP_MIN_FRAME || n > RP_MAX_FRAME) return RP_DEC_ERR_LENGTH;
  want = rp_get_u16(raw + n - RP_CRC_SIZE);
  if (rp_crc16(raw, n - RP_CRC_SIZE) != want) return RP_DEC_ERR_CRC;
  out->version = raw[0];
  out->type = raw[1];
  out->seq = rp_get_u16(raw + 2);
  out->flags = raw[4];
  out->len = (uint16_t)(n - RP_MIN_FRAME);
  memcpy(out->payload, raw + RP_HEADER_SIZE, out->len);
  return RP_DEC_FRAME;
}

void rp_decoder_init(rp_decoder_t *d) { memset(d, 0, sizeof *d); }

int rp_decoder_push(rp_decoder_t *d, uint8_t byte, rp_frame_t *out) {
  uint8_t raw[RP_MAX_ENCODED];
  size_t n = 0;
  int r;
  if (byte != 0) {
    if (d->overflow) return RP_DEC_NONE;
    if (d->len >= sizeof d->buf) {
      /* Too long to be a frame: skip everything up to the next delimiter. */
      d->overflow = 1;
      return RP_DEC_NONE;
    }
    d->buf[d->len++] = byte;
    return RP_DEC_NONE;
  }
  if (d->overflow) {
    d->overflow = 0;
    d->len = 0;
    d->oversize++;
    return RP_DEC_ERR_OVERSIZE;
  }
  if (d->len == 0) return RP_DEC_NONE; /* back-to-back delimiters are allowed padding */
  r = rp_cobs_decode(d->buf, d->len, raw, sizeof raw, &n);
  d->len = 0;
  if (r != 0) {
    d->cobs_errors++;
    return RP_DEC_ERR_COBS;
  }
  r = rp_frame_parse(raw, n, out);
  if (r == RP_DEC_FRAME) {
    d->frames++;
  } else if (r == RP_DEC_ERR_CRC) {
    d->crc_errors++;
  } else {
    d->length_errors++;
  }
  return r;
}

/* ---- messages ------------------------------------------------------------------------------ */

unsigned rp_max_frame(unsigned version) {
  if (version == 1) return RP_V1_MAX_FRAME;
  if (version == 2 && RP_MAX_VERSION >= 2) return RP_V2_MAX_FRAME;
  return 0;
}

int rp_state_fits(unsigned version, unsigned joints, unsigned sensors, unsigned dim) {
  if (version == 1) {
    return joints <= RP_V1_MAX_COUNT && sensors <= RP_V1_MAX_COUNT && dim <= RP_V1_MAX_COUNT &&
           RP_STATE_FIXED + 12u * joints + 4u * sensors + 4u * dim <= RP_V1_MAX_FRAME - RP_MIN_FRAME;
  }
  /* Version 2: every shape up to 64/64/64 fits (15 + 12*64 + 4*64 + 4*64 = 1295 <= 1529). */
  return version == 2 && RP_MAX_VERSION >= 2 && joints <= RP_V2_MAX_COUNT &&
         sensors <= RP_V2_MAX_COUNT && dim <= RP_V2_MAX_COUNT;
}

static void put_floats(uint8_t *p, const float *v, unsigned n) {
  unsigned i;
  for (i = 0; i < n; i++) rp_put_f32(p + 4u * i, v[i]);
}

static void get_floats(const uint8_t *p, float *v, unsigned n) {
  unsigned i;
  for (i = 0; i < n; i++) v[i] = rp_get_f32(p + 4u * i);
}

int rp_pack_hello(rp_frame_t *f, const rp_hello_t *m) {
  if (m->count < 1 || m->count > RP_MAX_VERSIONS) return -1;
  f->payload[0] = m->count;
  memcpy(f->payload + 1, m->versions, m->count);
  f->len = (uint16_t)(1u + m->count);
  return 0;
}

int rp_unpack_hello(const rp_frame_t *f, rp_hello_t *m) {
  if (f->len < 1) return RP_E_BAD_LENGTH;
  m->count = f->payload[0];
  if (m->count < 1 || m->count > RP_MAX_VERSIONS || f->len != 1u + m->count) return RP_E_BAD_LENGTH;
  memcpy(m->versions, f->payload + 1, m->count);
  return 0;
}

/* Offset of the name length: version 2 inserts the watchdog mode byte before it. */
static size_t caps_name_at(unsigned version) { return version >= 2 ? 9u : 8u; }

int rp_pack_capabilities(rp_frame_t *f, const rp_capabilities_t *m) {
  size_t nl = strlen(m->name), fl = strlen(m->fw_version), o = caps_name_at(m->protocol_version);
  if (nl > RP_MAX_NAME || fl > RP_MAX_FW || m->action_dim < 1 ||
      m->watchdog_mode > RP_WATCHDOG_HOLD ||
      !rp_state_fits(m->protocol_version, m->joint_count, m->sensor_count, m->action_dim))
    return -1;
  f->payload[0] = m->protocol_version;
  f->payload[1] = m->action_dim;
  f->payload[2] = m->joint_count;
  f->payload[3] = m->sensor_count;
  rp_put_u16(f->payload + 4, m->rate_hz);
  rp_put_u16(f->payload + 6, m->watchdog_ms);
  if (m->protocol_version >= 2) f->payload[8] = m->watchdog_mode;
  f->payload[o++] = (uint8_t)nl;
  memcpy(f->payload + o, m->name, nl);
  o += nl;
  f->payload[o++] = (uint8_t)fl;
  memcpy(f->payload + o, m->fw_version, fl);
  o += fl;
  put_floats(f->payload + o, m->low, m->action_dim);
  o += 4u * m->action_dim;
  put_floats(f->payload + o, m->high, m->action_dim);
  o += 4u * m->action_dim;
  put_floats(f->payload + o, m->safe, m->action_dim);
  o += 4u * m->action_dim;
  f->len = (uint16_t)o;
  return 0;
}

int rp_unpack_capabilities(const rp_frame_t *f, rp_capabilities_t *m) {
  size_t nl, fl, o;
  if (f->len < 10) return RP_E_BAD_LENGTH;
  m->protocol_version = f->payload[0];
  m->action_dim = f->payload[1];
  m->joint_count = f->payload[2];
  m->sensor_count = f->payload[3];
  m->rate_hz = rp_get_u16(f->payload + 4);
  m->watchdog_ms = rp_get_u16(f->payload + 6);
  if (m->protocol_version < 1 || m->protocol_version > RP_MAX_VERSION) return RP_E_BAD_VERSION;
  o = caps_name_at(m->protocol_version);
  if (f->len < o + 2u) return RP_E_BAD_LENGTH;
  m->watchdog_mode = m->protocol_version >= 2 ? f->payload[8] : (uint8_t)RP_WATCHDOG_LATCH;
  if (m->action_dim < 1 ||
      !rp_state_fits(m->protocol_version, m->joint_count, m->sensor_count, m->action_dim))
    return RP_E_WRONG_DIM;
  nl = f->payload[o];
  if (nl > RP_MAX_NAME || o + 2u + nl > f->len) return RP_E_BAD_LENGTH;
  fl = f->payload[o + 1u + nl];
  if (fl > RP_MAX_FW || f->len != o + 2u + nl + fl + 12u * m->action_dim) return RP_E_BAD_LENGTH;
  if (m->watchdog_mode > RP_WATCHDOG_HOLD) return RP_E_BAD_LENGTH;
  memcpy(m->name, f->payload + o + 1u, nl);
  m->name[nl] = '\0';
  memcpy(m->fw_version, f->payload + o + 2u + nl, fl);
  m->fw_version[fl] = '\0';
  o += 2u + nl + fl;
  get_floats(f->payload + o, m->low, m->action_dim);
  o += 4u * m->action_dim;
  get_floats(f->payload + o, m->high, m->action_dim);
  o += 4u * m->action_dim;
  get_floats(f->payload + o, m->safe, m->action_dim);
  return 0;
}

int rp_pack_state(rp_frame_t *f, const rp_state_t *m, unsigned version) {
  unsigned j = m->joint_count, s = m->sensor_count, d = m->action_dim, o = RP_STATE_FIXED;
  if (!rp_state_fits(version, j, s, d)) return -1;
  rp_put_u64(f->payload, m->device_time_us);
  rp_put_u16(f->payload + 8, m->status);
  rp_put_u16(f->payload + 10, m->last_cmd_seq);
  f->payload[12] = (uint8_t)j;
  f->payload[13] = (uint8_t)s;
  f->payload[14] = (uint8_t)d;
  put_floats(f->payload + o, m->positions, j);
  o += 4u * j;
  put_floats(f->payload + o, m->velocities, j);
  o += 4u * j;
  put_floats(f->payload + o, m->efforts, j);
  o += 4u * j;
  put_floats(f->payload + o, m->sensors, s);
  o += 4u * s;
  put_floats(f->payload + o, m->outputs, d);
  o += 4u * d;
  f->len = (uint16_t)o;
  return 0;
}

int rp_unpack_state(const rp_frame_t *f, rp_state_t *m, unsigned version) {
  unsigned j, s, d, o = RP_STATE_FIXED;
  if (f->len < RP_STATE_FIXED) return RP_E_BAD_LENGTH;
  j = f->payload[12];
  s = f->payload[13];
  d = f->payload[14];
  if (!rp_state_fits(version, j, s, d)) return RP_E_WRONG_DIM;
  if (f->len != RP_STATE_FIXED + 12u * j + 4u * s + 4u * d) return RP_E_BAD_LENGTH;
  m->device_time_us = rp_get_u64(f->payload);
  m->status = rp_get_u16(f->payload + 8);
  m->last_cmd_seq = rp_get_u16(f->payload + 10);
  m->joint_count = (uint8_t)j;
  m->sensor_count = (uint8_t)s;
  m->action_dim = (uint8_t)d;
  get_floats(f->payload + o, m->positions, j);
  o += 4u * j;
  get_floats(f->payload + o, m->velocities, j);
  o += 4u * j;
  get_floats(f->payload + o, m->efforts, j);
  o += 4u * j;
  get_floats(f->payload + o, m->sensors, s);
  o += 4u * s;
  get_floats(f->payload + o, m->outputs, d);
  return 0;
}

int rp_pack_command(rp_frame_t *f, const rp_command_t *m) {
  if (m->action_dim > RP_MAX_DIM) return -1;
  rp_put_u16(f->payload, m->validity_ms);
  f->payload[2] = m->action_dim;
  put_floats(f->payload + 3, m->action, m->action_dim);
  f->len = (uint16_t)(3u + 4u * m->action_dim);
  return 0;
}

int rp_unpack_command(const rp_frame_t *f, rp_command_t *m) {
  if (f->len < 3) return RP_E_BAD_LENGTH;
  m->validity_ms = rp_get_u16(f->payload);
  m->action_dim = f->payload[2];
  if (f->len != 3u + 4u * m->action_dim) return RP_E_BAD_LENGTH;
  if (m->action_dim > RP_MAX_DIM) return RP_E_WRONG_DIM;
  get_floats(f->payload + 3, m->action, m->action_dim);
  return 0;
}

int rp_pack_heartbeat(rp_frame_t *f, const rp_heartbeat_t *m) {
  rp_put_u32(f->payload, m->time_us);
  rp_put_u32(f->payload + 4, m->echo_us);
  f->len = 8;
  return 0;
}

int rp_unpack_heartbeat(const rp_frame_t *f, rp_heartbeat_t *m) {
  if (f->len != 8) return RP_E_BAD_LENGTH;
  m->time_us = rp_get_u32(f->payload);
  m->echo_us = rp_get_u32(f->payload + 4);
  return 0;
}

int rp_pack_estop(rp_frame_t *f, const rp_estop_t *m) {
  if (m->reason_len > RP_MAX_REASON) return -1;
  f->payload[0] = m->reason_len;
  memcpy(f->payload + 1, m->reason, m->reason_len);
  f->len = (uint16_t)(1u + m->reason_len);
  return 0;
}

int rp_unpack_estop(const rp_frame_t *f, rp_estop_t *m) {
  if (f->len < 1) return RP_E_BAD_LENGTH;
  m->reason_len = f->payload[0];
  if (m->reason_len > RP_MAX_REASON || f->len != 1u + m->reason_len) return RP_E_BAD_LENGTH;
  memcpy(m->reason, f->payload + 1, m->reason_len);
  m->reason[m->reason_len] = '\0';
  return 0;
}

int rp_pack_ack(rp_frame_t *f, const rp_ack_t *m) {
  f->payload[0] = m->type;
  rp_put_u16(f->payload + 1, m->seq);
  f->len = 3;
  return 0;
}

int rp_unpack_ack(const rp_frame_t *f, rp_ack_t *m) {
  if (f->len != 3) return RP_E_BAD_LENGTH;
  m->type = f->payload[0];
  m->seq = rp_get_u16(f->payload + 1);
  return 0;
}

int rp_pack_nack(rp_frame_t *f, const rp_nack_t *m) {
  f->payload[0] = m->type;
  rp_put_u16(f->payload + 1, m->seq);
  f->payload[3] = m->error;
  rp_put_u16(f->payload + 4, m->detail);
  f->len = 6;
  return 0;
}

int rp_unpack_nack(const rp_frame_t *f, rp_nack_t *m) {
  if (f->len != 6) return RP_E_BAD_LENGTH;
  m->type = f->payload[0];
  m->seq = rp_get_u16(f->payload + 1);
  m->error = f->payload[3];
  m->detail = rp_get_u16(f->payload + 4);
  return 0;
}

int rp_pack_config(rp_frame_t *f, const rp_config_t *m) {
  if (m->action_dim > RP_MAX_DIM) return -1;
  rp_put_u16(f->payload, m->watchdog_ms);
  f->payload[2] = m->action_dim;
  put_floats(f->payload + 3, m->low, m->action_dim);
  put_floats(f->payload + 3 + 4u * m->action_dim, m->high, m->action_dim);
  f->len = (uint16_t)(3u + 8u * m->action_dim);
  return 0;
}

int rp_unpack_config(const rp_frame_t *f, rp_config_t *m) {
  if (f->len < 3) return RP_E_BAD_LENGTH;
  m->watchdog_ms = rp_get_u16(f->payload);
  m->action_dim = f->payload[2];
  if (f->len != 3u + 8u * m->action_dim) return RP_E_BAD_LENGTH;
  if (m->action_dim > RP_MAX_DIM) return RP_E_WRONG_DIM;
  get_floats(f->payload + 3, m->low, m->action_dim);
  get_floats(f->payload + 3 + 4u * m->action_dim, m->high, m->action_dim);
  return 0;
}
