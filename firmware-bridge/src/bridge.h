/*
 * The firmware side of the resrt serial link: a state machine that owns the outputs.
 * It trusts nothing from the host: every COMMAND is checked (dimension, finiteness, sequence),
 * clamped to the device's own limits, and expires; a watchdog and an e-stop latch drive the
 * outputs to the safe action. Hardware access goes through rb_hal_t only, so the same core runs
 * on a microcontroller and in the host simulation.
 */
#ifndef RESRT_BRIDGE_H
#define RESRT_BRIDGE_H

#include <stdint.h>

#include "resrt_proto.h"

#define RB_WATCHDOG_MIN_MS 10u
#define RB_WATCHDOG_MAX_MS 60000u

typedef struct {
  void *ctx;
  /* Must not block for long; a short write loses the rest of that frame (the peer resyncs). */
  void (*write_bytes)(void *ctx, const uint8_t *data, size_t len);
  /* Monotonic microseconds. */
  uint64_t (*now_us)(void *ctx);
  void (*apply_outputs)(void *ctx, const float *outputs, uint8_t dim);
  /* Fills positions, velocities, efforts and sensors (counts are set by the bridge). */
  void (*read_sensors)(void *ctx, rp_state_t *state);
} rb_hal_t;

typedef struct {
  const char *name;
  const char *fw_version;
  uint8_t action_dim;
  uint8_t joint_count;
  uint8_t sensor_count;
  uint16_t rate_hz;
  uint16_t watchdog_ms;
  /* What the watchdog does in a version 2 session: RP_WATCHDOG_LATCH (a fault only RESET clears)
   * or RP_WATCHDOG_HOLD (the safe action until the next applied COMMAND). Version 1 latches. */
  uint8_t watchdog_mode;
  /* Factory limits: CONFIG may narrow them, never widen them. */
  float low[RP_MAX_DIM];
  float high[RP_MAX_DIM];
  float safe[RP_MAX_DIM];
} rb_settings_t;

typedef struct {
  uint32_t rx_frames;
  uint32_t tx_frames;
  uint32_t tx_corrupted;
  uint32_t nacks_sent;
  uint32_t commands_applied;
  uint32_t commands_clamped;
  uint32_t watchdog_trips;
} rb_counters_t;

typedef struct {
  rb_hal_t hal;
  rb_settings_t settings;
  rp_decoder_t decoder;
  float low[RP_MAX_DIM];
  float high[RP_MAX_DIM];
  float outputs[RP_MAX_DIM];
  uint16_t watchdog_ms;
  uint16_t status;
  uint8_t version;
  int negotiated;
  int have_cmd_seq;
  uint16_t last_cmd_seq;
  int watchdog_armed;
  uint64_t last_cmd_us;
  uint64_t expires_us; /* 0: no expiry pending */
  int have_heartbeat;
  uint64_t last_heartbeat_us;
  uint16_t tx_seq;
  int state_due; /* an event STATE is owed at the next tick */
  /* Periodic STATEs fall on a grid: slot k is due at anchor + floor(k * 1e6 / rate_hz) µs. */
  uint64_t grid_anchor_us;
  uint32_t grid_k;
  uint32_t corrupt_every;
  uint32_t tx_count;
  rb_counters_t counters;
} rb_bridge_t;

/* Returns 0, or -1 when the settings are out of range (dimensions, limits, rate, watchdog). A
 * shape that does not fit version 1 (more than 16 joints, sensors or actions, or a STATE over 256
 * bytes) is served in version 2 only. */
int rb_init(rb_bridge_t *b, const rb_hal_t *hal, const rb_settings_t *settings);
/* Feeds received bytes; handles every complete frame in them. */
void rb_feed(rb_bridge_t *b, const uint8_t *data, size_t len);
/* Runs the watchdog, command expiry and the STATE schedule; call at least every millisecond or
 * at rb_next_deadline_us. */
void rb_tick(rb_bridge_t *b);
uint64_t rb_next_deadline_us(const rb_bridge_t *b);
/* Fault injection for tests: flip one byte of every nth outgoing frame after its CRC. */
void rb_set_corrupt_every(rb_bridge_t *b, uint32_t n);
/* True when the 16-bit sequence a is newer than b (RFC 1982 serial arithmetic). */
int rb_seq_newer(uint16_t a, uint16_t b);

#endif /* RESRT_BRIDGE_H */
