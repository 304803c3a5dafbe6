/* Unit tests of the protocol core and the bridge state machine (fake clock, fake hardware). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/bridge.h"
#include "../src/resrt_proto.h"

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                          \
  do {                                                                       \
    checks++;                                                                \
    if (!(cond)) {                                                           \
      failures++;                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                        \
  } while (0)

/* ---- COBS ---------------------------------------------------------------------------------- */

static void cobs_roundtrip(const uint8_t *src, size_t len, size_t expect_enc_len) {
  uint8_t enc[600], dec[600];
  size_t n, m = 0, i;
  n = rp_cobs_encode(src, len, enc, sizeof enc);
  CHECK(n > 0);
  if (expect_enc_len) CHECK(n == expect_enc_len);
  for (i = 0; i < n; i++) CHECK(enc[i] != 0);
  CHECK(rp_cobs_decode(enc, n, dec, sizeof dec, &m) == 0);
  CHECK(m == len);
  CHECK(len == 0 || memcmp(src, dec, len) == 0);
}

static void test_cobs(void) {
  uint8_t buf[600];
  uint8_t enc[16];
  size_t i, n, m;
  /* Known encodings (the examples of the COBS paper / Wikipedia). */
  static const uint8_t z1[] = {0x00};
  static const uint8_t z2[] = {0x00, 0x00};
  static const uint8_t a[] = {0x11, 0x22, 0x00, 0x33};
  static const uint8_t a_enc[] = {0x03, 0x11, 0x22, 0x02, 0x33};
  n = rp_cobs_encode(z1, 1, enc, sizeof enc);
  CHECK(n == 2 && enc[0] == 0x01 && enc[1] == 0x01);
  n = rp_cobs_encode(z2, 2, enc, sizeof enc);
  CHECK(n == 3 && enc[0] == 1 && enc[1] == 1 && enc[2] == 1);
  n = rp_cobs_encode(a, 4, enc, sizeof enc);
  CHECK(n == 5 && memcmp(enc, a_enc, 5) == 0);
  n = rp_cobs_encode(a, 0, enc, sizeof enc);
  CHECK(n == 1 && enc[0] == 0x01);

  cobs_roundtrip(a, 0, 1);
  cobs_roundtrip(z1, 1, 2);
  for (i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i % 255 + 1);
  cobs_roundtrip(buf, 253, 254);
  cobs_roundtrip(buf, 254, 255); /* exactly one full block: no trailing code byte */
  cobs_roundtrip(buf, 255, 257);
  cobs_roundtrip(buf, 508, 510);
  buf[254] = 0;
  cobs_roundtrip(buf, 255, 257); /* a full block, then an empty block for the zero */
  memset(buf, 0, 300);
  cobs_roundtrip(buf, 300, 301);
  srand(7);
  for (i = 0; i < 2000; i++) {
    size_t len = (size_t)rand() % 300, k;
    for (k = 0; k < len; k++) buf[k] = (uint8_t)(rand() % 4 == 0 ? 0 : rand());
    cobs_roundtrip(buf, len, 0);
  }
  /* Malformed: a zero inside, a code running past the end, too small an output. */
  {
    static const uint8_t bad1[] = {0x03, 0x11, 0x00};
    static const uint8_t bad2[] = {0x05, 0x11, 0x22};
    uint8_t out[4];
    CHECK(rp_cobs_decode(bad1, 3, out, sizeof out, &m) == -1);
    CHECK(rp_cobs_decode(bad2, 3, out, sizeof out, &m) == -1);
    CHECK(rp_cobs_decode(a_enc, 5, out, 3, &m) == -1);
    CHECK(rp_cobs_encode(a, 4, out, 4) == 0);
  }
}

/* ---- CRC ----------------------------------------------------------------------------------- */

static void test_crc(void) {
  static const uint8_t check[] = "123456789";
  static const uint8_t zero[] = {0x00};
  static const uint8_t hdr[] = {0x01, 0x05, 0x00, 0x00, 0x00};
  CHECK(rp_crc16(check, 9) == 0x29B1);
  CHECK(rp_crc16(check, 0) == 0xFFFF);
  CHECK(rp_crc16(zero, 1) == 0xE1F0);
  CHECK(rp_crc16_update(rp_crc16(check, 4), check + 4, 5) == 0x29B1);
  (void)hdr;
}

/* ---- frames and stream decoding ------------------------------------------------------------ */

static int decode_all(rp_decoder_t *d, const uint8_t *bytes, size_t n, rp_frame_t *frames, int max) {
  int count = 0;
  size_t i;
  for (i = 0; i < n; i++) {
    if (rp_decoder_push(d, bytes[i], &frames[count]) == RP_DEC_FRAME && count < max - 1) count++;
  }
  return count;
}

static void test_frames(void) {
  rp_frame_t f, out[8];
  rp_decoder_t d;
  uint8_t wire[RP_MAX_WIRE * 4 + 64];
  size_t n = 0, w;
  rp_command_t c;
  int k;
  memset(&f, 0, sizeof f);
  f.version = 1;
  f.type = RP_COMMAND;
  f.seq = 0xBEEF;
  c.validity_ms = 100;
  c.action_dim = 2;
  c.action[0] = 0.5f;
  c.action[1] = -0.25f;
  CHECK(rp_pack_command(&f, &c) == 0);
  /* Garbage (including a lone non-delimited run) before the first frame. */
  for (k = 0; k < 40; k++) wire[n++] = (uint8_t)(k * 37 + 1);
  wire[n++] = 0;
  wire[n++] = 0x42;
  wire[n++] = 0x17;
  w = rp_frame_encode(&f, wire + n, sizeof wire - n);
  CHECK(w > 0);
  n += w;
  f.seq++;
  w = rp_frame_encode(&f, wire + n, sizeof wire - n);
  n += w;
  rp_decoder_init(&d);
  k = decode_all(&d, wire, n, out, 8);
  /* "0x42 0x17" glued to the first frame kills it; the second frame is recovered. */
  CHECK(k == 1);
  CHECK(k == 1 && out[0].seq == 0xBEF0 && out[0].type == RP_COMMAND && out[0].len == 11);
  CHECK(d.crc_errors + d.cobs_errors + d.length_errors >= 1);

  /* Oversize runs are skipped up to the next delimiter. */
  rp_decoder_init(&d);
  n = 0;
  for (k = 0; k < (int)RP_MAX_ENCODED + 10; k++) wire[n++] = 0x55;
  wire[n++] = 0;
  n += rp_frame_encode(&f, wire + n, sizeof wire - n);
  k = decode_all(&d, wire, n, out, 8);
  CHECK(k == 1 && d.oversize == 1);

  /* A single flipped byte in the frame content is always rejected. */
  {
    uint8_t raw[RP_MAX_FRAME];
    size_t rn = rp_frame_serialize(&f, raw), i;
    int rejected = 0;
    for (i = 0; i < rn; i++) {
      uint8_t tmp[RP_MAX_FRAME];
      memcpy(tmp, raw, rn);
      tmp[i] ^= 0x5A;
      rp_decoder_init(&d);
      w = rp_wire_from_raw(tmp, rn, wire, sizeof wire);
      if (decode_all(&d, wire, w, out, 8) == 0 && d.crc_errors == 1) rejected++;
    }
    CHECK(rejected == (int)rn);
  }

  /* Largest frame round-trips, one byte more does not encode. */
  f.len = RP_MAX_PAYLOAD;
  memset(f.payload, 0xAB, f.len);
  w = rp_frame_encode(&f, wire, sizeof wire);
  CHECK(w > 0 && w <= RP_MAX_WIRE);
  rp_decoder_init(&d);
  CHECK(decode_all(&d, wire, w, out, 8) == 1 && out[0].len == RP_MAX_PAYLOAD);
}

static void test_messages(void) {
  rp_frame_t f;
  rp_capabilities_t c, c2;
  rp_state_t s, s2;
  rp_hello_t h, h2;
  unsigned i;
  memset(&c, 0, sizeof c);
  memset(&f, 0, sizeof f);
  c.protocol_version = 1;
  c.action_dim = 3;
  c.joint_count = 3;
  c.sensor_count = 2;
  c.rate_hz = 500;
  c.watchdog_ms = 200;
  strcpy(c.name, "arm");
  strcpy(c.fw_version, "1.2.3");
  for (i = 0; i < 3; i++) {
    c.low[i] = -0.5f;
    c.high[i] = 0.75f;
    c.safe[i] = 0.0f;
  }
  CHECK(rp_pack_capabilities(&f, &c) == 0);
  CHECK(f.len == 10 + 3 + 5 + 36);
  CHECK(rp_unpack_capabilities(&f, &c2) == 0);
  CHECK(c2.rate_hz == 500 && strcmp(c2.name, "arm") == 0 && strcmp(c2.fw_version, "1.2.3") == 0);
  CHECK(c2.high[2] == 0.75f);
  f.len--;
  CHECK(rp_unpack_capabilities(&f, &c2) == RP_E_BAD_LENGTH);

  memset(&s, 0, sizeof s);
  s.device_time_us = 0x0102030405060708ull;
  s.status = RP_ST_ESTOP | RP_ST_CLAMPED;
  s.last_cmd_seq = 65535;
  s.joint_count = 12;
  s.sensor_count = 10;
  s.action_dim = 12;
  for (i = 0; i < 12; i++) s.positions[i] = (float)i;
  s.outputs[11] = -1.0f;
  CHECK(rp_pack_state(&f, &s, 1) == 0);
  CHECK(f.len == 15 + 144 + 40 + 48);
  CHECK(rp_unpack_state(&f, &s2, 1) == 0);
  CHECK(s2.device_time_us == s.device_time_us && s2.last_cmd_seq == 65535 && s2.positions[7] == 7.0f);
  CHECK(s2.outputs[11] == -1.0f);
  s.sensor_count = 11; /* one float too many for a frame */
  CHECK(rp_pack_state(&f, &s, 1) == -1);
  CHECK(rp_pack_state(&f, &s, 2) == 0); /* version 2 carries it */

  h.count = 3;
  h.versions[0] = 1;
  h.versions[1] = 2;
  h.versions[2] = 9;
  CHECK(rp_pack_hello(&f, &h) == 0 && f.len == 4);
  CHECK(rp_unpack_hello(&f, &h2) == 0 && h2.count == 3 && h2.versions[2] == 9);
  f.payload[0] = 4;
  CHECK(rp_unpack_hello(&f, &h2) == RP_E_BAD_LENGTH);
}

/* ---- bridge -------------------------------------------------------------------------------- */

typedef struct {
  uint64_t now;
  float outputs[RP_MAX_DIM];
  int applies;
  rp_decoder_t rx; /* decodes what the bridge writes */
  rp_frame_t frames[512];
  int nframes;
} fake_t;

static void fake_write(void *ctx, const uint8_t *data, size_t len) {
  fake_t *t = (fake_t *)ctx;
  size_t i;
  for (i = 0; i < len; i++) {
    if (rp_decoder_push(&t->rx, data[i], &t->frames[t->nframes]) == RP_DEC_FRAME && t->nframes < 511)
      t->nframes++;
  }
}
static uint64_t fake_now(void *ctx) { return ((fake_t *)ctx)->now; }
static void fake_apply(void *ctx, const float *o, uint8_t dim) {
  fake_t *t = (fake_t *)ctx;
  memcpy(t->outputs, o, dim * sizeof *o);
  t->applies++;
}
static void fake_read(void *ctx, rp_state_t *s) {
  (void)ctx;
  s->positions[0] = 1.0f;
}

static fake_t fake;
static rb_bridge_t bridge;
static uint16_t host_seq = 100;

static void setup(void) {
  rb_hal_t hal;
  rb_settings_t st;
  unsigned i;
  memset(&fake, 0, sizeof fake);
  rp_decoder_init(&fake.rx);
  fake.now = 1000000;
  hal.ctx = &fake;
  hal.write_bytes = fake_write;
  hal.now_us = fake_now;
  hal.apply_outputs = fake_apply;
  hal.read_sensors = fake_read;
  memset(&st, 0, sizeof st);
  st.name = "test";
  st.fw_version = "t";
  st.action_dim = 2;
  st.joint_count = 2;
  st.sensor_count = 1;
  st.rate_hz = 100;
  st.watchdog_ms = 50;
  for (i = 0; i < 2; i++) {
    st.low[i] = -0.8f;
    st.high[i] = 0.8f;
    st.safe[i] = 0.1f;
  }
  CHECK(rb_init(&bridge, &hal, &st) == 0);
}

static void send_raw(rp_frame_t *f) {
  uint8_t wire[RP_MAX_WIRE];
  size_t n = rp_frame_encode(f, wire, sizeof wire);
  rb_feed(&bridge, wire, n);
}

static void host_send(uint8_t type, uint16_t seq, uint8_t flags, rp_frame_t *f) {
  f->version = 1;
  f->type = type;
  f->seq = seq;
  f->flags = flags;
  send_raw(f);
}

static void hello(void) {
  rp_frame_t f;
  rp_hello_t h;
  h.count = 1;
  h.versions[0] = 1;
  rp_pack_hello(&f, &h);
  host_send(RP_HELLO, host_seq++, 0, &f);
}

static void command(uint16_t seq, float a0, float a1, uint16_t validity) {
  rp_frame_t f;
  rp_command_t c;
  c.validity_ms = validity;
  c.action_dim = 2;
  c.action[0] = a0;
  c.action[1] = a1;
  rp_pack_command(&f, &c);
  host_send(RP_COMMAND, seq, 0, &f);
}

static void heartbeat(void) {
  rp_frame_t f;
  rp_heartbeat_t h;
  h.time_us = 5;
  h.echo_us = 0;
  rp_pack_heartbeat(&f, &h);
  host_send(RP_HEARTBEAT, host_seq++, 0, &f);
}

static void simple(uint8_t type, uint8_t flags) {
  rp_frame_t f;
  f.len = 0;
  if (type == RP_ESTOP) {
    f.len = 1;
    f.payload[0] = 0;
  }
  host_send(type, host_seq++, flags, &f);
}

/* The last frame of a type the bridge sent, or NULL. */
static const rp_frame_t *last_of(uint8_t type) {
  int i;
  for (i = fake.nframes - 1; i >= 0; i--)
    if (fake.frames[i].type == type) return &fake.frames[i];
  return NULL;
}

static int last_nack_error(void) {
  const rp_frame_t *f = last_of(RP_NACK);
  rp_nack_t n;
  if (!f || rp_unpack_nack(f, &n) != 0) return -1;
  return n.error;
}

static uint16_t last_state_status(void) {
  const rp_frame_t *f = last_of(RP_STATE);
  rp_state_t s;
  if (!f || rp_unpack_state(f, &s, bridge.version) != 0) return 0xFFFF;
  return s.status;
}

static void test_bridge_negotiation(void) {
  rp_frame_t f;
  rp_hello_t h;
  rp_capabilities_t c;
  setup();
  command(1, 0.1f, 0.1f, 100);
  CHECK(last_nack_error() == RP_E_NOT_NEGOTIATED);
  h.count = 2;
  h.versions[0] = 7;
  h.versions[1] = 9;
  rp_pack_hello(&f, &h);
  host_send(RP_HELLO, 1, 0, &f);
  CHECK(last_nack_error() == RP_E_BAD_VERSION);
  CHECK(!bridge.negotiated);
  h.count = 2;
  h.versions[0] = 1;
  h.versions[1] = 9;
  rp_pack_hello(&f, &h);
  host_send(RP_HELLO, 2, 0, &f);
  CHECK(bridge.negotiated && bridge.version == 1);
  CHECK(last_of(RP_CAPABILITIES) != NULL);
  CHECK(last_of(RP_CAPABILITIES) && rp_unpack_capabilities(last_of(RP_CAPABILITIES), &c) == 0 &&
        c.action_dim == 2 && c.watchdog_ms == 50 && c.safe[0] == 0.1f && c.high[1] == 0.8f);
  rb_tick(&bridge);
  CHECK(last_of(RP_STATE) != NULL);
  /* Wrong header version after negotiation. */
  command(3, 0.f, 0.f, 100);
  {
    rp_frame_t g;
    rp_command_t cm;
    cm.validity_ms = 10;
    cm.action_dim = 2;
    cm.action[0] = cm.action[1] = 0.f;
    rp_pack_command(&g, &cm);
    g.version = 2;
    g.type = RP_COMMAND;
    g.seq = 4;
    g.flags = 0;
    send_raw(&g);
    CHECK(last_nack_error() == RP_E_BAD_VERSION);
  }
}

static void test_bridge_clamp_and_validation(void) {
  setup();
  hello();
  command(10, 0.5f, 2.0f, 100);
  CHECK(fake.outputs[0] == 0.5f && fake.outputs[1] == 0.8f);
  rb_tick(&bridge);
  CHECK(last_state_status() & RP_ST_CLAMPED);
  command(11, -5.0f, 0.0f, 100);
  CHECK(fake.outputs[0] == -0.8f);
  command(12, NAN, 0.0f, 100);
  CHECK(last_nack_error() == RP_E_NON_FINITE);
  CHECK(fake.outputs[0] == -0.8f);
  command(13, 0.0f, INFINITY, 100);
  CHECK(last_nack_error() == RP_E_NON_FINITE);
  {
    rp_frame_t f;
    rp_command_t c;
    c.validity_ms = 100;
    c.action_dim = 3;
    c.action[0] = c.action[1] = c.action[2] = 0.2f;
    rp_pack_command(&f, &c);
    host_send(RP_COMMAND, 14, 0, &f);
    CHECK(last_nack_error() == RP_E_WRONG_DIM);
  }
  CHECK(fake.outputs[0] == -0.8f && bridge.last_cmd_seq == 11);
  command(15, 0.3f, 0.3f, 100);
  rb_tick(&bridge);
  CHECK(!(last_state_status() & RP_ST_CLAMPED));
}

static void test_bridge_sequences(void) {
  setup();
  hello();
  command(65534, 0.1f, 0.f, 100);
  CHECK(bridge.last_cmd_seq == 65534);
  command(65535, 0.2f, 0.f, 100);
  CHECK(fake.outputs[0] == 0.2f);
  command(0, 0.3f, 0.f, 100); /* wraps */
  CHECK(fake.outputs[0] == 0.3f && bridge.last_cmd_seq == 0);
  command(1, 0.4f, 0.f, 100);
  CHECK(fake.outputs[0] == 0.4f);
  command(1, 0.5f, 0.f, 100); /* duplicate */
  CHECK(last_nack_error() == RP_E_STALE_SEQ && fake.outputs[0] == 0.4f);
  command(65535, 0.5f, 0.f, 100); /* older, across the wrap */
  CHECK(last_nack_error() == RP_E_STALE_SEQ && fake.outputs[0] == 0.4f);
  CHECK(rb_seq_newer(0, 65535) && !rb_seq_newer(65535, 0) && rb_seq_newer(0x7FFF, 0) &&
        !rb_seq_newer(0x8000, 0) && !rb_seq_newer(5, 5));
  /* A new session restarts numbering. */
  hello();
  command(0, 0.6f, 0.f, 100);
  CHECK(fake.outputs[0] == 0.6f);
}

static void test_bridge_watchdog_and_expiry(void) {
  setup();
  hello();
  /* Not armed before the first command: no fault however long we wait. */
  fake.now += 1000000;
  rb_tick(&bridge);
  CHECK(!(bridge.status & RP_ST_WATCHDOG) && (bridge.status & RP_ST_SAFE_HOLD));
  command(1, 0.5f, 0.5f, 20);
  CHECK(fake.outputs[0] == 0.5f);
  fake.now += 21000; /* validity over, watchdog (50 ms) not yet */
  rb_tick(&bridge);
  CHECK((bridge.status & RP_ST_EXPIRED) && fake.outputs[0] == 0.1f);
  CHECK(!(bridge.status & RP_ST_WATCHDOG));
  command(2, 0.5f, 0.5f, 0);
  CHECK(fake.outputs[0] == 0.5f && !(bridge.status & RP_ST_SAFE_HOLD));
  fake.now += 50000;
  rb_tick(&bridge);
  CHECK(!(bridge.status & RP_ST_WATCHDOG));
  fake.now += 1001;
  rb_tick(&bridge);
  CHECK((bridge.status & RP_ST_WATCHDOG) && fake.outputs[0] == 0.1f && fake.outputs[1] == 0.1f);
  CHECK(last_state_status() & RP_ST_WATCHDOG);
  /* Latched: commands refused until RESET with a fresh heartbeat. */
  command(3, 0.5f, 0.5f, 0);
  CHECK(last_nack_error() == RP_E_FAULTED && fake.outputs[0] == 0.1f);
  simple(RP_RESET, RP_FLAG_ACK_REQ);
  CHECK(last_nack_error() == RP_E_STALE_HEARTBEAT && (bridge.status & RP_ST_WATCHDOG));
  heartbeat();
  CHECK(last_of(RP_HEARTBEAT) != NULL);
  simple(RP_RESET, RP_FLAG_ACK_REQ);
  CHECK(!(bridge.status & RP_ST_WATCHDOG) && last_of(RP_ACK) != NULL);
  command(4, 0.5f, 0.5f, 0);
  CHECK(fake.outputs[0] == 0.5f);
}

static void test_bridge_estop(void) {
  setup();
  /* E-stop works even before negotiation. */
  simple(RP_ESTOP, RP_FLAG_ACK_REQ);
  CHECK(bridge.status & RP_ST_ESTOP);
  hello();
  command(1, 0.5f, 0.5f, 100);
  CHECK(last_nack_error() == RP_E_ESTOPPED && fake.outputs[0] == 0.1f);
  /* Stale heartbeat: RESET refused. */
  heartbeat();
  fake.now += 60000;
  simple(RP_RESET, RP_FLAG_ACK_REQ);
  CHECK(last_nack_error() == RP_E_STALE_HEARTBEAT && (bridge.status & RP_ST_ESTOP));
  /* Still latched after a new HELLO. */
  hello();
  CHECK(bridge.status & RP_ST_ESTOP);
  heartbeat();
  simple(RP_RESET, 0);
  CHECK(!(bridge.status & RP_ST_ESTOP));
  command(2, 0.5f, 0.5f, 100);
  CHECK(fake.outputs[0] == 0.5f);
}

static void test_bridge_config(void) {
  rp_frame_t f;
  rp_config_t c;
  setup();
  hello();
  c.watchdog_ms = 500;
  c.action_dim = 2;
  c.low[0] = -0.5f;
  c.high[0] = 0.5f;
  c.low[1] = -0.9f; /* wider than the factory limit */
  c.high[1] = 0.5f;
  rp_pack_config(&f, &c);
  host_send(RP_CONFIG, host_seq++, RP_FLAG_ACK_REQ, &f);
  CHECK(last_nack_error() == RP_E_BAD_CONFIG);
  c.low[1] = -0.2f;
  rp_pack_config(&f, &c);
  host_send(RP_CONFIG, host_seq++, RP_FLAG_ACK_REQ, &f);
  CHECK(last_of(RP_ACK) != NULL && bridge.watchdog_ms == 500);
  command(1, 0.7f, -0.7f, 100);
  CHECK(fake.outputs[0] == 0.5f && fake.outputs[1] == -0.2f);
  c.watchdog_ms = 5;
  rp_pack_config(&f, &c);
  host_send(RP_CONFIG, host_seq++, RP_FLAG_ACK_REQ, &f);
  CHECK(last_nack_error() == RP_E_BAD_CONFIG);
}

static void test_bridge_garbage(void) {
  static const uint8_t junk[] = {0x12, 0x34, 0x00, 0x01, 0x00};
  setup();
  hello();
  rb_feed(&bridge, junk, sizeof junk);
  CHECK(last_nack_error() == RP_E_BAD_CRC || last_nack_error() == RP_E_BAD_LENGTH);
  command(1, 0.25f, 0.f, 100);
  CHECK(fake.outputs[0] == 0.25f);
}

int main(void) {
  test_cobs();
  test_crc();
  test_frames();
  test_messages();
  test_bridge_negotiation();
  test_bridge_clamp_and_validation();
  test_bridge_sequences();
  test_bridge_watchdog_and_expiry();
  test_bridge_estop();
  test_bridge_config();
  test_bridge_garbage();
  if (failures) {
    fprintf(stderr, "unit tests: %d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf("unit tests: %d checks passed\n", checks);
  return 0;
}
