/*
 * Fuzz smoke test of the stream decoder and the bridge: random and mutated frames, checked
 * against an independent reference (table CRC, separate COBS decoder). Built with sanitizers
 * when the compiler has them, so memory errors abort the run.
 *
 * usage: fuzz_decoder [frames] [seed]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/bridge.h"
#include "../src/resrt_proto.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}

/* ---- reference implementations, written independently of resrt_proto.c -------------------- */

static uint16_t crc_table[256];

static void crc_table_init(void) {
  unsigned i, b;
  for (i = 0; i < 256; i++) {
    uint16_t c = (uint16_t)(i << 8);
    for (b = 0; b < 8; b++) c = (uint16_t)((c & 0x8000u) ? (unsigned)(c << 1) ^ 0x1021u : (unsigned)(c << 1));
    crc_table[i] = c;
  }
}

static uint16_t ref_crc(const uint8_t *p, size_t n) {
  uint16_t c = 0xFFFF;
  size_t i;
  for (i = 0; i < n; i++) c = (uint16_t)((c << 8) ^ crc_table[((c >> 8) ^ p[i]) & 0xFFu]);
  return c;
}

/* Returns the decoded length or -1. */
static long ref_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
  size_t r = 0, w = 0;
  while (r < n) {
    size_t code = in[r], end = r + code;
    if (code == 0 || end > n) return -1;
    for (r = r + 1; r < end; r++) {
      if (in[r] == 0 || w >= cap) return -1;
      out[w++] = in[r];
    }
    if (code < 0xFF && r < n) {
      if (w >= cap) return -1;
      out[w++] = 0;
    }
  }
  return (long)w;
}

/* ---- harness ------------------------------------------------------------------------------- */

static rp_decoder_t dec;
static uint8_t segment[4096];
static size_t seg_len = 0;
static unsigned long accepted = 0, rejected = 0, disagreements = 0, bad_accepts = 0;
static unsigned long resync_expected = 0, resync_ok = 0;
static rp_frame_t last_accepted;

static int last_frame_equal(const rp_frame_t *f) {
  return last_accepted.version == f->version && last_accepted.type == f->type &&
         last_accepted.seq == f->seq && last_accepted.flags == f->flags &&
         last_accepted.len == f->len && memcmp(last_accepted.payload, f->payload, f->len) == 0;
}

/* Feeds bytes; at each delimiter compares the decoder's verdict with the reference. */
static void feed(const uint8_t *bytes, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    rp_frame_t f;
    int r = rp_decoder_push(&dec, bytes[i], &f);
    if (bytes[i] != 0) {
      if (seg_len < sizeof segment) segment[seg_len] = bytes[i];
      seg_len++;
      if (r != RP_DEC_NONE) disagreements++;
      continue;
    }
    {
      uint8_t raw[4096];
      long m = seg_len <= sizeof segment ? ref_cobs_decode(segment, seg_len, raw, sizeof raw) : -1;
      int ref_ok = seg_len <= RP_MAX_ENCODED && m >= (long)RP_MIN_FRAME && m <= (long)RP_MAX_FRAME &&
                   ref_crc(raw, (size_t)m - 2) == (uint16_t)(raw[m - 2] | (raw[m - 1] << 8));
      if (r == RP_DEC_FRAME) {
        accepted++;
        last_accepted = f;
        if (!ref_ok) {
          bad_accepts++;
        } else if (f.version != raw[0] || f.type != raw[1] ||
                   f.seq != (uint16_t)(raw[2] | (raw[3] << 8)) || f.flags != raw[4] ||
                   f.len != (size_t)m - RP_MIN_FRAME ||
                   memcmp(f.payload, raw + RP_HEADER_SIZE, f.len) != 0) {
          disagreements++;
        }
      } else {
        if (seg_len > 0) rejected++;
        if (ref_ok) disagreements++;
      }
      seg_len = 0;
    }
  }
}

static size_t random_frame(uint8_t *wire, size_t cap, rp_frame_t *f) {
  unsigned i;
  f->version = (uint8_t)(rnd() % 4 == 0 ? rnd() : 1);
  f->type = (uint8_t)(rnd() % 12);
  f->seq = (uint16_t)rnd();
  f->flags = (uint8_t)(rnd() % 3);
  /* Mostly version 1 sizes; one in eight up to the largest (version 2) frame. */
  f->len = (uint16_t)(rnd() % 8 == 0 ? rnd() % (RP_MAX_PAYLOAD + 1)
                                     : rnd() % (RP_V1_MAX_FRAME - RP_MIN_FRAME + 1));
  for (i = 0; i < f->len; i++) f->payload[i] = (uint8_t)(rnd() % 3 == 0 ? 0 : rnd());
  if (rnd() % 2 == 0) {
    /* Well-formed messages with hostile values reach deeper into the bridge (in both versions:
     * a HELLO picks one, and frames of the other get BAD_VERSION). */
    f->version = (uint8_t)(1 + rnd() % 2);
    if (rnd() % 8 == 0) {
      rp_hello_t h = {1, {1}};
      h.versions[0] = (uint8_t)(1 + rnd() % 2);
      f->type = RP_HELLO;
      rp_pack_hello(f, &h);
    } else if (rnd() % 2 == 0) {
      rp_command_t c;
      uint32_t bits;
      c.validity_ms = (uint16_t)(rnd() % 50);
      c.action_dim = (uint8_t)(rnd() % 8 == 0 ? rnd() % 17 : 4);
      for (i = 0; i < c.action_dim; i++) {
        bits = rnd() % 4 == 0 ? rnd() : 0x3F000000u + rnd() % 0x01000000u;
        memcpy(&c.action[i], &bits, sizeof bits);
        if (rnd() % 2) c.action[i] = -c.action[i];
      }
      f->type = RP_COMMAND;
      rp_pack_command(f, &c);
    } else if (rnd() % 4 == 0) {
      rp_config_t c;
      c.watchdog_ms = (uint16_t)(rnd() % 100);
      c.action_dim = 4;
      for (i = 0; i < 4; i++) {
        c.low[i] = -(float)(rnd() % 120) / 100.0f;
        c.high[i] = (float)(rnd() % 120) / 100.0f;
      }
      f->type = RP_CONFIG;
      rp_pack_config(f, &c);
    } else {
      static const uint8_t simple[] = {RP_HEARTBEAT, RP_ESTOP, RP_RESET, RP_HOLD};
      f->type = simple[rnd() % 4];
      f->len = f->type == RP_HEARTBEAT ? 8 : (f->type == RP_ESTOP ? 1 : 0);
      if (f->type == RP_ESTOP) f->payload[0] = 0;
    }
  }
  return rp_frame_encode(f, wire, cap);
}

/* Fake hardware so the whole bridge state machine sees the same streams. */
static uint64_t fake_clock = 0;
static void hw_write(void *ctx, const uint8_t *d, size_t n) {
  (void)ctx;
  (void)d;
  (void)n;
}
static uint64_t hw_now(void *ctx) {
  (void)ctx;
  return fake_clock;
}
static rb_bridge_t bridge;

/* Every applied output vector is the safe action, or inside the limits in force. */
static void hw_apply(void *ctx, const float *o, uint8_t dim) {
  unsigned i;
  int safe = 1;
  (void)ctx;
  for (i = 0; i < dim; i++)
    if (o[i] != bridge.settings.safe[i]) safe = 0;
  if (safe) return;
  for (i = 0; i < dim; i++) {
    if (!(o[i] >= bridge.low[i] && o[i] <= bridge.high[i])) {
      fprintf(stderr, "fuzz: bridge applied output %u = %f outside [%f, %f]\n", i, (double)o[i],
              (double)bridge.low[i], (double)bridge.high[i]);
      abort();
    }
  }
}
static void hw_read(void *ctx, rp_state_t *s) {
  (void)ctx;
  (void)s;
}

int main(int argc, char **argv) {
  unsigned long total = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000ul;
  unsigned long k, corrupted_rejected = 0, corrupted = 0;
  rb_hal_t hal = {NULL, hw_write, hw_now, hw_apply, hw_read};
  rb_settings_t st;
  uint8_t wire[8192];
  unsigned i;
  if (argc > 2) rng_state ^= strtoull(argv[2], NULL, 10) * 0x2545F4914F6CDD1Dull;
  crc_table_init();
  rp_decoder_init(&dec);
  memset(&st, 0, sizeof st);
  st.name = "fuzz";
  st.fw_version = "0";
  st.action_dim = 4;
  st.joint_count = 4;
  st.sensor_count = 2;
  st.rate_hz = 1000;
  st.watchdog_ms = 20;
  for (i = 0; i < 4; i++) {
    st.low[i] = -1.0f;
    st.high[i] = 1.0f;
  }
  if (rb_init(&bridge, &hal, &st) != 0) return 2;

  for (k = 0; k < total; k++) {
    rp_frame_t f;
    size_t n = 0;
    unsigned kind = (unsigned)(k % 10);
    fake_clock += rnd() % 3000;
    if (kind < 4) {
      /* Random bytes, mostly delimited, sometimes long runs. */
      size_t len = rnd() % (rnd() % 8 == 0 ? 2000 : 300); /* some over the largest frame */
      for (n = 0; n < len; n++) wire[n] = (uint8_t)(rnd() % 16 == 0 ? 0 : rnd());
      wire[n++] = 0;
    } else if (kind < 6) {
      /* Garbage, a delimiter, then an intact frame: the decoder must resynchronize on it. */
      size_t g = rnd() % 64, w;
      unsigned long before = dec.frames;
      for (n = 0; n < g; n++) wire[n] = (uint8_t)rnd();
      wire[n++] = 0;
      w = random_frame(wire + n, sizeof wire - n, &f);
      n += w;
      resync_expected++;
      feed(wire, n);
      if (dec.frames > before && last_frame_equal(&f)) resync_ok++;
      rb_feed(&bridge, wire, n);
      rb_tick(&bridge);
      continue;
    } else if (kind < 9) {
      /* A valid frame with a few wire-level mutations. */
      unsigned m, muts = 1 + rnd() % 4;
      n = random_frame(wire, sizeof wire - 64, &f);
      for (m = 0; m < muts && n > 1; m++) {
        size_t at = rnd() % n;
        switch (rnd() % 5) {
          case 0:
            wire[at] ^= (uint8_t)(1u << (rnd() % 8));
            break;
          case 1:
            wire[at] = (uint8_t)rnd();
            break;
          case 2: /* insert */
            memmove(wire + at + 1, wire + at, n - at);
            wire[at] = (uint8_t)rnd();
            n++;
            break;
          case 3: /* delete */
            memmove(wire + at, wire + at + 1, n - at - 1);
            n--;
            break;
          default: /* truncate, keeping a delimiter */
            n = at + 1;
            wire[at] = 0;
            break;
        }
      }
      if (n == 0 || wire[n - 1] != 0) wire[n++] = 0;
    } else {
      /* One byte of the frame content corrupted after its CRC: must always be rejected. */
      uint8_t raw[RP_MAX_FRAME];
      size_t rn;
      unsigned long before = dec.frames;
      random_frame(wire, sizeof wire, &f);
      rn = rp_frame_serialize(&f, raw);
      raw[rnd() % rn] ^= (uint8_t)(1 + rnd() % 255);
      n = rp_wire_from_raw(raw, rn, wire, sizeof wire);
      corrupted++;
      feed(wire, n);
      if (dec.frames == before) corrupted_rejected++;
      rb_feed(&bridge, wire, n);
      rb_tick(&bridge);
      continue;
    }
    feed(wire, n);
    rb_feed(&bridge, wire, n);
    rb_tick(&bridge);
  }
  printf("fuzz: %lu frames, %lu accepted, %lu rejected, %lu crc errors, %lu corrupted (%lu "
         "rejected), %lu/%lu resynchronized, bridge rx %u nacks %u applied %u\n",
         total, accepted, rejected, (unsigned long)dec.crc_errors, corrupted, corrupted_rejected,
         resync_ok, resync_expected, bridge.counters.rx_frames, bridge.counters.nacks_sent,
         bridge.counters.commands_applied);
  if (bad_accepts || disagreements || corrupted_rejected != corrupted || resync_ok != resync_expected ||
      total < 1) {
    fprintf(stderr, "fuzz: FAILED: %lu frames with a bad CRC accepted, %lu disagreements with "
                    "the reference, %lu corrupted frames accepted, %lu frames lost after garbage\n",
            bad_accepts, disagreements, corrupted - corrupted_rejected, resync_expected - resync_ok);
    return 1;
  }
  return 0;
}
