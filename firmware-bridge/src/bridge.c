#include "bridge.h"

#include <math.h>
#include <string.h>

static const uint8_t supported_versions[] = {
    1u,
#if RP_MAX_VERSION >= 2
    2u,
#endif
};

int rb_seq_newer(uint16_t a, uint16_t b) {
  uint16_t diff = (uint16_t)(a - b);
  return diff != 0 && diff < 0x8000u;
}

static int speaks(uint8_t version) {
  unsigned k;
  for (k = 0; k < sizeof supported_versions; k++)
    if (supported_versions[k] == version) return 1;
  return 0;
}

/* The highest version this device can serve with its shape (its STATE must fit). */
static uint8_t highest_version(const rb_bridge_t *b) {
  unsigned k;
  uint8_t best = 0;
  const rb_settings_t *s = &b->settings;
  for (k = 0; k < sizeof supported_versions; k++) {
    uint8_t v = supported_versions[k];
    if (v > best && rp_state_fits(v, s->joint_count, s->sensor_count, s->action_dim)) best = v;
  }
  return best;
}

/* Before negotiation the device writes version 1 headers: every host reads them, and the frames
 * it may send then (HEARTBEAT, ACK, NACK) are laid out alike in every version. */
static uint8_t tx_version(const rb_bridge_t *b) { return b->negotiated ? b->version : 1u; }

static void send_frame(rb_bridge_t *b, rp_frame_t *f) {
  uint8_t raw[RP_MAX_FRAME];
  uint8_t wire[RP_MAX_WIRE];
  size_t n, w;
  f->version = tx_version(b);
  f->seq = b->tx_seq++;
  f->flags = 0; /* the device requests no ACKs */
  n = rp_frame_serialize(f, raw);
  b->tx_count++;
  if (b->corrupt_every > 0 && b->tx_count % b->corrupt_every == 0) {
    /* After the CRC was computed: a single corrupted byte that the CRC must catch. */
    raw[n / 2] ^= 0x5Au;
    b->counters.tx_corrupted++;
  }
  w = rp_wire_from_raw(raw, n, wire, sizeof wire);
  if (w == 0) return;
  b->hal.write_bytes(b->hal.ctx, wire, w);
  b->counters.tx_frames++;
}

static void send_ack(rb_bridge_t *b, const rp_frame_t *req) {
  rp_frame_t f;
  rp_ack_t a;
  if (!(req->flags & RP_FLAG_ACK_REQ)) return;
  a.type = req->type;
  a.seq = req->seq;
  f.type = RP_ACK;
  rp_pack_ack(&f, &a);
  send_frame(b, &f);
}

static void send_nack(rb_bridge_t *b, uint8_t type, uint16_t seq, uint8_t error, uint16_t detail) {
  rp_frame_t f;
  rp_nack_t n;
  n.type = type;
  n.seq = seq;
  n.error = error;
  n.detail = detail;
  f.type = RP_NACK;
  rp_pack_nack(&f, &n);
  send_frame(b, &f);
  b->counters.nacks_sent++;
}

/* Outputs to the safe action; an event STATE reports it. `cause` is the status bit that says why. */
static void hold_safe(rb_bridge_t *b, uint16_t cause) {
  memcpy(b->outputs, b->settings.safe, sizeof b->outputs);
  b->hal.apply_outputs(b->hal.ctx, b->outputs, b->settings.action_dim);
  b->status |= (uint16_t)(RP_ST_SAFE_HOLD | cause);
  b->expires_us = 0;
  b->state_due = 1;
}

static void send_capabilities(rb_bridge_t *b) {
  rp_frame_t f;
  rp_capabilities_t c;
  const rb_settings_t *s = &b->settings;
  memset(&c, 0, sizeof c);
  c.protocol_version = b->version;
  c.action_dim = s->action_dim;
  c.joint_count = s->joint_count;
  c.sensor_count = s->sensor_count;
  c.rate_hz = s->rate_hz;
  c.watchdog_ms = b->watchdog_ms;
  c.watchdog_mode = s->watchdog_mode;
  strncpy(c.name, s->name, RP_MAX_NAME);
  strncpy(c.fw_version, s->fw_version, RP_MAX_FW);
  memcpy(c.low, b->low, sizeof c.low);
  memcpy(c.high, b->high, sizeof c.high);
  memcpy(c.safe, s->safe, sizeof c.safe);
  f.type = RP_CAPABILITIES;
  if (rp_pack_capabilities(&f, &c) == 0) send_frame(b, &f);
}

static void send_state(rb_bridge_t *b, uint64_t now) {
  rp_frame_t f;
  rp_state_t st;
  memset(&st, 0, sizeof st);
  b->hal.read_sensors(b->hal.ctx, &st);
  st.device_time_us = now;
  st.status = b->status;
  st.last_cmd_seq = b->last_cmd_seq;
  st.joint_count = b->settings.joint_count;
  st.sensor_count = b->settings.sensor_count;
  st.action_dim = b->settings.action_dim;
  memcpy(st.outputs, b->outputs, sizeof st.outputs);
  f.type = RP_STATE;
  if (rp_pack_state(&f, &st, b->version) == 0) send_frame(b, &f);
}

/* ---- the STATE grid -------------------------------------------------------------------------- */

static uint64_t grid_slot(const rb_bridge_t *b, uint32_t k) {
  return b->grid_anchor_us + ((uint64_t)k * 1000000u) / b->settings.rate_hz;
}

/* Restarts the grid: slot 0 at `at` (a STATE owed now), or slot 1 after a STATE just sent at `at`. */
static void grid_restart(rb_bridge_t *b, uint64_t at, uint32_t k) {
  b->grid_anchor_us = at;
  b->grid_k = k;
}

/* Moves to the first slot after `now`: on time that is the next one; after a stall the missed
 * slots are skipped rather than sent in a burst. */
static void grid_advance(rb_bridge_t *b, uint64_t now) {
  uint32_t rate = b->settings.rate_hz;
  uint64_t k = now > b->grid_anchor_us ? (now - b->grid_anchor_us) * rate / 1000000u : 0;
  /* Keep k small: one second is exactly `rate` slots, so the anchor moves by whole seconds. */
  b->grid_anchor_us += (k / rate) * 1000000u;
  k %= rate;
  b->grid_k = (uint32_t)k + 1u;
  while (grid_slot(b, b->grid_k) <= now) b->grid_k++;
}

static int limits_valid(const float *low, const float *high, const float *outer_low,
                        const float *outer_high, unsigned dim) {
  unsigned i;
  for (i = 0; i < dim; i++) {
    if (!isfinite(low[i]) || !isfinite(high[i]) || low[i] > high[i]) return 0;
    if (low[i] < outer_low[i] || high[i] > outer_high[i]) return 0;
  }
  return 1;
}

int rb_init(rb_bridge_t *b, const rb_hal_t *hal, const rb_settings_t *settings) {
  float unit_low[RP_MAX_DIM], unit_high[RP_MAX_DIM];
  unsigned i;
  memset(b, 0, sizeof *b);
  b->settings = *settings;
  if (settings->action_dim < 1 || settings->action_dim > RP_MAX_DIM || highest_version(b) == 0)
    return -1;
  if (settings->rate_hz < 1 || settings->watchdog_ms < RB_WATCHDOG_MIN_MS ||
      settings->watchdog_ms > RB_WATCHDOG_MAX_MS || settings->watchdog_mode > RP_WATCHDOG_HOLD)
    return -1;
  for (i = 0; i < RP_MAX_DIM; i++) {
    unit_low[i] = -1.0f;
    unit_high[i] = 1.0f;
  }
  if (!limits_valid(settings->low, settings->high, unit_low, unit_high, settings->action_dim))
    return -1;
  for (i = 0; i < settings->action_dim; i++) {
    if (!isfinite(settings->safe[i]) || settings->safe[i] < -1.0f || settings->safe[i] > 1.0f)
      return -1;
  }
  if (strlen(settings->name) > RP_MAX_NAME || strlen(settings->fw_version) > RP_MAX_FW) return -1;
  b->hal = *hal;
  rp_decoder_init(&b->decoder);
  memcpy(b->low, settings->low, sizeof b->low);
  memcpy(b->high, settings->high, sizeof b->high);
  b->watchdog_ms = settings->watchdog_ms;
  b->version = 1u;
  hold_safe(b, 0);
  b->state_due = 0;
  return 0;
}

void rb_set_corrupt_every(rb_bridge_t *b, uint32_t n) { b->corrupt_every = n; }

static void on_hello(rb_bridge_t *b, const rp_frame_t *f, uint64_t now) {
  rp_hello_t h;
  unsigned i;
  uint8_t best = 0, highest = highest_version(b);
  const rb_settings_t *s = &b->settings;
  int err = rp_unpack_hello(f, &h);
  if (err) {
    send_nack(b, f->type, f->seq, (uint8_t)err, 0);
    return;
  }
  for (i = 0; i < h.count; i++) {
    uint8_t v = h.versions[i];
    if (v > best && speaks(v) && rp_state_fits(v, s->joint_count, s->sensor_count, s->action_dim))
      best = v;
  }
  if (best == 0) {
    send_nack(b, f->type, f->seq, RP_E_BAD_VERSION, highest);
    return;
  }
  b->version = best;
  b->negotiated = 1;
  b->status |= RP_ST_NEGOTIATED;
  /* A new session numbers its commands afresh; the watchdog and latches carry over. */
  b->have_cmd_seq = 0;
  send_capabilities(b);
  b->state_due = 0;
  grid_restart(b, now, 0);
}

static void on_command(rb_bridge_t *b, const rp_frame_t *f, uint64_t now) {
  rp_command_t c;
  unsigned i;
  int clamped = 0;
  int err = rp_unpack_command(f, &c);
  if (err) {
    send_nack(b, f->type, f->seq, (uint8_t)err, b->settings.action_dim);
    return;
  }
  if (c.action_dim != b->settings.action_dim) {
    send_nack(b, f->type, f->seq, RP_E_WRONG_DIM, b->settings.action_dim);
    return;
  }
  for (i = 0; i < c.action_dim; i++) {
    if (!isfinite(c.action[i])) {
      send_nack(b, f->type, f->seq, RP_E_NON_FINITE, (uint16_t)i);
      return;
    }
  }
  if (b->have_cmd_seq && !rb_seq_newer(f->seq, b->last_cmd_seq)) {
    send_nack(b, f->type, f->seq, RP_E_STALE_SEQ, b->last_cmd_seq);
    return;
  }
  if (b->status & RP_ST_ESTOP) {
    send_nack(b, f->type, f->seq, RP_E_ESTOPPED, 0);
    return;
  }
  if (b->status & RP_ST_WATCHDOG) {
    send_nack(b, f->type, f->seq, RP_E_FAULTED, 0);
    return;
  }
  for (i = 0; i < c.action_dim; i++) {
    float v = c.action[i];
    if (v < b->low[i]) {
      v = b->low[i];
      clamped = 1;
    } else if (v > b->high[i]) {
      v = b->high[i];
      clamped = 1;
    }
    b->outputs[i] = v;
  }
  b->hal.apply_outputs(b->hal.ctx, b->outputs, b->settings.action_dim);
  b->have_cmd_seq = 1;
  b->last_cmd_seq = f->seq;
  b->last_cmd_us = now;
  b->watchdog_armed = 1;
  b->expires_us = c.validity_ms ? now + (uint64_t)c.validity_ms * 1000u : 0;
  b->status &=
      (uint16_t)~(RP_ST_SAFE_HOLD | RP_ST_EXPIRED | RP_ST_CLAMPED | RP_ST_WATCHDOG_HOLD);
  if (clamped) {
    b->status |= RP_ST_CLAMPED;
    b->counters.commands_clamped++;
  }
  b->counters.commands_applied++;
  send_ack(b, f);
  /* One STATE per applied COMMAND, before the next frame is read: the host sees every applied
   * seq. It restarts the grid, so a command stream at rate_hz does not double the traffic. */
  send_state(b, now);
  b->state_due = 0;
  grid_restart(b, now, 1);
}

static void on_config(rb_bridge_t *b, const rp_frame_t *f) {
  rp_config_t c;
  unsigned i;
  int err = rp_unpack_config(f, &c);
  if (err) {
    send_nack(b, f->type, f->seq, (uint8_t)err, b->settings.action_dim);
    return;
  }
  if (c.action_dim != b->settings.action_dim) {
    send_nack(b, f->type, f->seq, RP_E_WRONG_DIM, b->settings.action_dim);
    return;
  }
  if (c.watchdog_ms < RB_WATCHDOG_MIN_MS || c.watchdog_ms > RB_WATCHDOG_MAX_MS ||
      !limits_valid(c.low, c.high, b->settings.low, b->settings.high, c.action_dim)) {
    send_nack(b, f->type, f->seq, RP_E_BAD_CONFIG, 0);
    return;
  }
  memcpy(b->low, c.low, sizeof b->low);
  memcpy(b->high, c.high, sizeof b->high);
  b->watchdog_ms = c.watchdog_ms;
  /* New limits bind at once: a command being held is clamped again (the safe action is not). */
  if (!(b->status & RP_ST_SAFE_HOLD)) {
    int changed = 0;
    for (i = 0; i < b->settings.action_dim; i++) {
      float v = b->outputs[i];
      if (v < b->low[i]) v = b->low[i];
      if (v > b->high[i]) v = b->high[i];
      if (v != b->outputs[i]) {
        b->outputs[i] = v;
        changed = 1;
      }
    }
    if (changed) {
      b->hal.apply_outputs(b->hal.ctx, b->outputs, b->settings.action_dim);
      b->status |= RP_ST_CLAMPED;
      b->state_due = 1;
    }
  }
  send_ack(b, f);
}

static void on_heartbeat(rb_bridge_t *b, const rp_frame_t *f, uint64_t now) {
  rp_heartbeat_t h, reply;
  rp_frame_t out;
  int err = rp_unpack_heartbeat(f, &h);
  if (err) {
    send_nack(b, f->type, f->seq, (uint8_t)err, 0);
    return;
  }
  b->have_heartbeat = 1;
  b->last_heartbeat_us = now;
  reply.time_us = (uint32_t)(now & 0xFFFFFFFFu);
  reply.echo_us = h.time_us;
  out.type = RP_HEARTBEAT;
  rp_pack_heartbeat(&out, &reply);
  send_frame(b, &out);
}

static void on_estop(rb_bridge_t *b, const rp_frame_t *f) {
  /* Latched whatever the payload: the reason is informational, and a malformed one must not stop
   * the stop. The ACK means "latched", so the host stops repeating it. */
  b->status |= RP_ST_ESTOP;
  b->watchdog_armed = 0;
  hold_safe(b, 0);
  send_ack(b, f);
}

/* Safe action now, watchdog disarmed until the next applied COMMAND: the state after boot. */
static void enter_hold(rb_bridge_t *b) {
  b->watchdog_armed = 0;
  b->status &= (uint16_t)~(RP_ST_EXPIRED | RP_ST_WATCHDOG_HOLD);
  hold_safe(b, 0);
}

static void on_reset(rb_bridge_t *b, const rp_frame_t *f, uint64_t now) {
  if (f->len != 0) {
    send_nack(b, f->type, f->seq, RP_E_BAD_LENGTH, 0);
    return;
  }
  if (!b->have_heartbeat || now - b->last_heartbeat_us > (uint64_t)b->watchdog_ms * 1000u) {
    send_nack(b, f->type, f->seq, RP_E_STALE_HEARTBEAT, 0);
    return;
  }
  b->status &= (uint16_t)~(RP_ST_ESTOP | RP_ST_WATCHDOG);
  enter_hold(b);
  send_ack(b, f);
}

static void on_hold(rb_bridge_t *b, const rp_frame_t *f) {
  if (f->len != 0) {
    send_nack(b, f->type, f->seq, RP_E_BAD_LENGTH, 0);
    return;
  }
  enter_hold(b);
  send_ack(b, f);
}

static void on_frame(rb_bridge_t *b, const rp_frame_t *f) {
  uint64_t now = b->hal.now_us(b->hal.ctx);
  b->counters.rx_frames++;
  /* E-stop is honoured before any session or version check; HELLO is read in every version. */
  if (f->type == RP_ESTOP) {
    on_estop(b, f);
    return;
  }
  if (f->type == RP_HELLO) {
    on_hello(b, f, now);
    return;
  }
  if (!b->negotiated) {
    if (f->type != RP_HEARTBEAT) {
      send_nack(b, f->type, f->seq, RP_E_NOT_NEGOTIATED, 0);
      return;
    }
    if (!speaks(f->version)) {
      send_nack(b, f->type, f->seq, RP_E_BAD_VERSION, highest_version(b));
      return;
    }
  } else if (f->version != b->version) {
    send_nack(b, f->type, f->seq, RP_E_BAD_VERSION, b->version);
    return;
  }
  switch (f->type) {
    case RP_COMMAND:
      on_command(b, f, now);
      break;
    case RP_CONFIG:
      on_config(b, f);
      break;
    case RP_HEARTBEAT:
      on_heartbeat(b, f, now);
      break;
    case RP_RESET:
      on_reset(b, f, now);
      break;
    case RP_HOLD: /* version 2 */
      if (b->version >= 2)
        on_hold(b, f);
      else
        send_nack(b, f->type, f->seq, RP_E_UNKNOWN_TYPE, 0);
      break;
    default:
      send_nack(b, f->type, f->seq, RP_E_UNKNOWN_TYPE, 0);
      break;
  }
}

void rb_feed(rb_bridge_t *b, const uint8_t *data, size_t len) {
  size_t i;
  rp_frame_t f;
  for (i = 0; i < len; i++) {
    int r = rp_decoder_push(&b->decoder, data[i], &f);
    if (r == RP_DEC_FRAME) {
      on_frame(b, &f);
    } else if (r == RP_DEC_ERR_CRC) {
      send_nack(b, 0, 0, RP_E_BAD_CRC, 0);
    } else if (r < 0) {
      send_nack(b, 0, 0, RP_E_BAD_LENGTH, 0);
    }
  }
}

void rb_tick(rb_bridge_t *b) {
  uint64_t now = b->hal.now_us(b->hal.ctx);
  if (b->watchdog_armed && now - b->last_cmd_us > (uint64_t)b->watchdog_ms * 1000u) {
    b->watchdog_armed = 0;
    b->counters.watchdog_trips++;
    /* Hold mode exists from version 2; a version 1 session always latches. */
    if (b->settings.watchdog_mode == RP_WATCHDOG_HOLD && b->version >= 2) {
      hold_safe(b, RP_ST_WATCHDOG_HOLD);
    } else {
      hold_safe(b, RP_ST_WATCHDOG);
    }
  }
  if (b->expires_us != 0 && now > b->expires_us) hold_safe(b, RP_ST_EXPIRED);
  if (b->negotiated) {
    int periodic = now >= grid_slot(b, b->grid_k);
    if (b->state_due || periodic) {
      send_state(b, now);
      b->state_due = 0;
      if (periodic) grid_advance(b, now);
    }
  }
}

uint64_t rb_next_deadline_us(const rb_bridge_t *b) {
  uint64_t d = UINT64_MAX;
  if (b->negotiated) d = b->state_due ? 0 : grid_slot(b, b->grid_k);
  if (b->watchdog_armed) {
    uint64_t w = b->last_cmd_us + (uint64_t)b->watchdog_ms * 1000u + 1u;
    if (w < d) d = w;
  }
  if (b->expires_us != 0 && b->expires_us + 1u < d) d = b->expires_us + 1u;
  return d;
}
