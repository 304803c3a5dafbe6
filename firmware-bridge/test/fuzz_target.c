/*
 * libFuzzer target for the stream decoder and the bridge state machine (clang -fsanitize=fuzzer).
 * Built and run by `make fuzz-libfuzzer`, replayed for coverage by `make fuzz-coverage`; the seed
 * corpus is test/fuzz-corpus (BENCHMARKS.md has the runs).
 *
 * An input is one device's life: its first byte picks the device's shape and watchdog mode, the
 * rest is a sequence of records, so that the fuzzer reaches past the CRC into every message:
 *   op 0: raw bytes onto the wire        [0] [n] [n bytes]
 *   op 1: a frame the harness encodes     [1] [version] [type] [seq lo] [seq hi] [flags] [n] [n bytes]
 *         (header + payload + a correct CRC, COBS, the delimiter)
 *   op 2: the clock advances, then a tick [2] [lo] [hi]            (units of 50 µs)
 *   op 3: a long frame (up to 1529 bytes) [3] [version] [type] [len lo] [len hi] [fill]
 *         (the payload repeats `fill` with every 4th byte from the rest of the input)
 * Any other op byte is taken modulo 4.
 *
 * What must hold whatever the input (abort() otherwise, besides ASan/UBSan):
 *   - every output vector the bridge applies is the safe action, or each value lies in the
 *     device's current [low, high] (so never NaN, never outside the factory limits);
 *   - every byte the bridge writes decodes into valid frames, and every STATE, ACK, NACK,
 *     HEARTBEAT and CAPABILITIES it sends unpacks with its own rules.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/bridge.h"
#include "../src/resrt_proto.h"

static rb_bridge_t bridge;
static rp_decoder_t tx_decoder;
static uint64_t clock_us;

static void check(int ok) {
  if (!ok) abort();
}

static void hw_write(void *ctx, const uint8_t *data, size_t len) {
  size_t i;
  (void)ctx;
  for (i = 0; i < len; i++) {
    rp_frame_t f;
    int r = rp_decoder_push(&tx_decoder, data[i], &f);
    check(r >= 0); /* the device never writes an unreadable frame */
    if (r != RP_DEC_FRAME) continue;
    switch (f.type) {
      case RP_STATE: {
        rp_state_t s;
        check(rp_unpack_state(&f, &s, f.version) == 0);
        check(s.action_dim == bridge.settings.action_dim);
        break;
      }
      case RP_CAPABILITIES: {
        rp_capabilities_t c;
        check(rp_unpack_capabilities(&f, &c) == 0 && c.protocol_version == f.version);
        break;
      }
      case RP_ACK: {
        rp_ack_t a;
        check(rp_unpack_ack(&f, &a) == 0);
        break;
      }
      case RP_NACK: {
        rp_nack_t n;
        check(rp_unpack_nack(&f, &n) == 0 && n.error >= RP_E_BAD_CRC && n.error <= RP_E_FAULTED);
        break;
      }
      case RP_HEARTBEAT: {
        rp_heartbeat_t h;
        check(rp_unpack_heartbeat(&f, &h) == 0);
        break;
      }
      default:
        check(0); /* a type a device never sends */
    }
  }
}

static uint64_t hw_now(void *ctx) {
  (void)ctx;
  return clock_us;
}

static void hw_apply(void *ctx, const float *o, uint8_t dim) {
  unsigned i;
  int safe = 1;
  (void)ctx;
  check(dim == bridge.settings.action_dim);
  for (i = 0; i < dim; i++)
    if (memcmp(&o[i], &bridge.settings.safe[i], sizeof o[i]) != 0) safe = 0;
  if (safe) return;
  for (i = 0; i < dim; i++) check(o[i] >= bridge.low[i] && o[i] <= bridge.high[i]);
}

static void hw_read(void *ctx, rp_state_t *s) {
  unsigned i;
  (void)ctx;
  for (i = 0; i < s->joint_count; i++) s->positions[i] = (float)i;
}

static void setup(uint8_t pick) {
  static const uint8_t shapes[4][3] = {{3, 3, 2}, {1, 0, 0}, {64, 64, 64}, {3, 0, 20}};
  rb_hal_t hal = {NULL, hw_write, hw_now, hw_apply, hw_read};
  rb_settings_t st;
  unsigned i;
  const uint8_t *shape = shapes[pick & 3u];
  memset(&st, 0, sizeof st);
  st.name = "fuzz";
  st.fw_version = "1";
  st.action_dim = shape[0];
  st.joint_count = shape[1];
  st.sensor_count = shape[2];
  st.rate_hz = 500;
  st.watchdog_ms = 20;
  st.watchdog_mode = (pick & 4u) ? RP_WATCHDOG_HOLD : RP_WATCHDOG_LATCH;
  for (i = 0; i < st.action_dim; i++) {
    st.low[i] = -0.75f;
    st.high[i] = 0.5f;
    st.safe[i] = (pick & 8u) ? 0.25f : 0.0f;
  }
  clock_us = 1000000u;
  rp_decoder_init(&tx_decoder);
  check(rb_init(&bridge, &hal, &st) == 0);
}

static void feed_frame(rp_frame_t *f) {
  uint8_t wire[RP_MAX_WIRE];
  size_t n = rp_frame_encode(f, wire, sizeof wire);
  check(n > 0);
  rb_feed(&bridge, wire, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t i = 1;
  if (size < 1) return 0;
  setup(data[0]);
  while (i < size) {
    uint8_t op = data[i++] & 3u;
    if (op == 0) {
      size_t n;
      if (i >= size) break;
      n = data[i++];
      if (n > size - i) n = size - i;
      rb_feed(&bridge, data + i, n);
      i += n;
    } else if (op == 1) {
      rp_frame_t f;
      size_t n;
      if (size - i < 6) break;
      f.version = data[i];
      f.type = data[i + 1];
      f.seq = (uint16_t)(data[i + 2] | (data[i + 3] << 8));
      f.flags = data[i + 4];
      n = data[i + 5];
      i += 6;
      if (n > size - i) n = size - i;
      f.len = (uint16_t)n;
      memcpy(f.payload, data + i, n);
      i += n;
      feed_frame(&f);
    } else if (op == 2) {
      if (size - i < 2) break;
      clock_us += 50u * (uint64_t)(data[i] | (data[i + 1] << 8));
      i += 2;
      rb_tick(&bridge);
    } else {
      rp_frame_t f;
      size_t k, rest;
      if (size - i < 6) break;
      f.version = data[i];
      f.type = data[i + 1];
      f.seq = 0;
      f.flags = 0;
      f.len = (uint16_t)((data[i + 2] | (data[i + 3] << 8)) % (RP_MAX_PAYLOAD + 1u));
      i += 5;
      rest = size - i;
      for (k = 0; k < f.len; k++)
        f.payload[k] = (k % 4u == 3u && rest > 0) ? data[i + (k / 4u) % rest] : data[i - 1];
      feed_frame(&f);
    }
  }
  rb_tick(&bridge);
  return 0;
}
