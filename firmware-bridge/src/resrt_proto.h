/*
 * resrt serial protocol, versions 1 and 2: COBS framing, CRC-16/CCITT-FALSE, little-endian
 * messages. The normative description is docs/serial-protocol.md; this header mirrors it.
 *
 * Portable C99, no allocation: every buffer is sized by the constants below.
 */
#ifndef RESRT_PROTO_H
#define RESRT_PROTO_H

#include <stddef.h>
#include <stdint.h>

/*
 * Highest protocol version this build speaks. Version 2 carries up to 64 joints, sensors and
 * actions in frames of up to 1536 bytes, which costs about 8 KB of RAM (decoder buffer, frame and
 * state structs); a small board builds with -DRP_MAX_VERSION=1 (AVR boards do by default) and
 * keeps every buffer at 256 bytes.
 */
#ifndef RP_MAX_VERSION
#if defined(__AVR__)
#define RP_MAX_VERSION 1u /* 2 KB of RAM: version 2's buffers do not fit */
#else
#define RP_MAX_VERSION 2u
#endif
#endif
#if RP_MAX_VERSION != 1 && RP_MAX_VERSION != 2
#error "RP_MAX_VERSION must be 1 or 2"
#endif
#define RP_PROTOCOL_VERSION RP_MAX_VERSION

#define RP_HEADER_SIZE 5u
#define RP_CRC_SIZE 2u
#define RP_MIN_FRAME (RP_HEADER_SIZE + RP_CRC_SIZE)

/* Per-version limits (docs/serial-protocol.md, "Limits"). A frame is header + payload + CRC. */
#define RP_V1_MAX_FRAME 256u
#define RP_V1_MAX_COUNT 16u /* action dimensions, joints, sensors: each */
#define RP_V2_MAX_FRAME 1536u
#define RP_V2_MAX_COUNT 64u

#if RP_MAX_VERSION >= 2
#define RP_MAX_FRAME RP_V2_MAX_FRAME
#define RP_MAX_DIM RP_V2_MAX_COUNT
#else
#define RP_MAX_FRAME RP_V1_MAX_FRAME
#define RP_MAX_DIM RP_V1_MAX_COUNT
#endif
#define RP_MAX_PAYLOAD (RP_MAX_FRAME - RP_HEADER_SIZE - RP_CRC_SIZE)
/* COBS adds one byte per started block of 254; the wire adds the 0x00 delimiter. */
#define RP_MAX_ENCODED (RP_MAX_FRAME + (RP_MAX_FRAME + 253u) / 254u)
#define RP_MAX_WIRE (RP_MAX_ENCODED + 1u)

#define RP_MAX_JOINTS RP_MAX_DIM
#define RP_MAX_SENSORS RP_MAX_DIM
#define RP_MAX_NAME 24u
#define RP_MAX_FW 16u
#define RP_MAX_VERSIONS 8u
#define RP_MAX_REASON 64u
/* Fixed part of a STATE payload. */
#define RP_STATE_FIXED 15u

typedef enum {
  RP_HELLO = 0x01,
  RP_CAPABILITIES = 0x02,
  RP_STATE = 0x03,
  RP_COMMAND = 0x04,
  RP_HEARTBEAT = 0x05,
  RP_ESTOP = 0x06,
  RP_RESET = 0x07,
  RP_ACK = 0x08,
  RP_NACK = 0x09,
  RP_CONFIG = 0x0A,
  RP_HOLD = 0x0B /* version 2 */
} rp_type_t;

/* Header flags. */
#define RP_FLAG_ACK_REQ 0x01u

typedef enum {
  RP_E_NONE = 0,
  RP_E_BAD_CRC = 1,
  RP_E_BAD_LENGTH = 2,
  RP_E_WRONG_DIM = 3,
  RP_E_BAD_VERSION = 4,
  RP_E_STALE_SEQ = 5,
  RP_E_ESTOPPED = 6,
  RP_E_NON_FINITE = 7,
  RP_E_UNKNOWN_TYPE = 8,
  RP_E_NOT_NEGOTIATED = 9,
  RP_E_BAD_CONFIG = 10,
  RP_E_STALE_HEARTBEAT = 11,
  RP_E_FAULTED = 12
} rp_error_t;

/* STATE status bits. */
#define RP_ST_ESTOP 0x0001u
#define RP_ST_WATCHDOG 0x0002u
#define RP_ST_CLAMPED 0x0004u
#define RP_ST_SAFE_HOLD 0x0008u
#define RP_ST_EXPIRED 0x0010u
#define RP_ST_NEGOTIATED 0x0020u
#define RP_ST_WATCHDOG_HOLD 0x0040u /* version 2: the watchdog fired in hold mode (not latched) */

/* CAPABILITIES watchdog mode (version 2; a version 1 session always latches). */
#define RP_WATCHDOG_LATCH 0u
#define RP_WATCHDOG_HOLD 1u

typedef struct {
  uint8_t version;
  uint8_t type;
  uint16_t seq;
  uint8_t flags;
  uint16_t len; /* payload length */
  uint8_t payload[RP_MAX_PAYLOAD];
} rp_frame_t;

/* ---- primitives ---------------------------------------------------------------------------- */

uint16_t rp_crc16(const uint8_t *data, size_t len);
uint16_t rp_crc16_update(uint16_t crc, const uint8_t *data, size_t len);

/* Returns the encoded length (no delimiter), or 0 when dst is too small. */
size_t rp_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap);
/* Returns 0 and sets *out_len on success; -1 on malformed input or when dst is too small. */
int rp_cobs_decode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len);

/* header + payload + CRC into raw (at least RP_MAX_FRAME bytes); returns its length. */
size_t rp_frame_serialize(const rp_frame_t *f, uint8_t *raw);
/* COBS-encodes raw and appends the 0x00 delimiter; returns the wire length or 0. */
size_t rp_wire_from_raw(const uint8_t *raw, size_t n, uint8_t *wire, size_t cap);
/* Both steps; returns the wire length or 0. */
size_t rp_frame_encode(const rp_frame_t *f, uint8_t *wire, size_t cap);
/* Parses a decoded (un-COBSed) frame; returns RP_DEC_FRAME or a negative RP_DEC_ERR_*. */
int rp_frame_parse(const uint8_t *raw, size_t n, rp_frame_t *out);

/* ---- stream decoder ------------------------------------------------------------------------ */

#define RP_DEC_NONE 0
#define RP_DEC_FRAME 1
#define RP_DEC_ERR_CRC (-1)
#define RP_DEC_ERR_COBS (-2)
#define RP_DEC_ERR_LENGTH (-3)
#define RP_DEC_ERR_OVERSIZE (-4)

typedef struct {
  uint8_t buf[RP_MAX_ENCODED];
  size_t len;
  int overflow;
  uint32_t frames;
  uint32_t crc_errors;
  uint32_t cobs_errors;
  uint32_t length_errors;
  uint32_t oversize;
} rp_decoder_t;

void rp_decoder_init(rp_decoder_t *d);
/* Feeds one byte. Returns RP_DEC_FRAME when *out holds a verified frame, RP_DEC_NONE while
 * inside a frame, or a negative error when a delimited frame was discarded. */
int rp_decoder_push(rp_decoder_t *d, uint8_t byte, rp_frame_t *out);

/* ---- messages ------------------------------------------------------------------------------ */

typedef struct {
  uint8_t count;
  uint8_t versions[RP_MAX_VERSIONS];
} rp_hello_t;

typedef struct {
  uint8_t protocol_version;
  uint8_t action_dim;
  uint8_t joint_count;
  uint8_t sensor_count;
  uint16_t rate_hz;
  uint16_t watchdog_ms;
  uint8_t watchdog_mode; /* RP_WATCHDOG_*; on the wire from version 2 */
  char name[RP_MAX_NAME + 1];
  char fw_version[RP_MAX_FW + 1];
  float low[RP_MAX_DIM];
  float high[RP_MAX_DIM];
  float safe[RP_MAX_DIM];
} rp_capabilities_t;

typedef struct {
  uint64_t device_time_us;
  uint16_t status;
  uint16_t last_cmd_seq;
  uint8_t joint_count;
  uint8_t sensor_count;
  uint8_t action_dim;
  float positions[RP_MAX_JOINTS];
  float velocities[RP_MAX_JOINTS];
  float efforts[RP_MAX_JOINTS];
  float sensors[RP_MAX_SENSORS];
  float outputs[RP_MAX_DIM];
} rp_state_t;

typedef struct {
  uint16_t validity_ms;
  uint8_t action_dim;
  float action[RP_MAX_DIM];
} rp_command_t;

typedef struct {
  uint32_t time_us;
  uint32_t echo_us;
} rp_heartbeat_t;

typedef struct {
  uint8_t reason_len;
  char reason[RP_MAX_REASON + 1];
} rp_estop_t;

typedef struct {
  uint8_t type;
  uint16_t seq;
} rp_ack_t;

typedef struct {
  uint8_t type;
  uint16_t seq;
  uint8_t error;
  uint16_t detail;
} rp_nack_t;

typedef struct {
  uint16_t watchdog_ms;
  uint8_t action_dim;
  float low[RP_MAX_DIM];
  float high[RP_MAX_DIM];
} rp_config_t;

/* Largest decoded frame of a protocol version (0 for a version this build does not speak). */
unsigned rp_max_frame(unsigned version);
/* True when a device of this shape can speak this version: its STATE and CAPABILITIES fit. */
int rp_state_fits(unsigned version, unsigned joints, unsigned sensors, unsigned dim);

/* Pack functions fill f->payload and f->len (header fields untouched); return 0 or -1 when the
 * message does not fit or is out of range. Unpack functions return 0, or RP_E_BAD_LENGTH /
 * RP_E_WRONG_DIM style errors (positive rp_error_t) for malformed payloads.
 * CAPABILITIES is laid out by its own protocol_version field; STATE limits depend on the
 * session's version. COMMAND and CONFIG are checked length first (against their own D), then
 * D against what this build can hold: the caller compares D with the device's. */
int rp_pack_hello(rp_frame_t *f, const rp_hello_t *m);
int rp_unpack_hello(const rp_frame_t *f, rp_hello_t *m);
int rp_pack_capabilities(rp_frame_t *f, const rp_capabilities_t *m);
int rp_unpack_capabilities(const rp_frame_t *f, rp_capabilities_t *m);
int rp_pack_state(rp_frame_t *f, const rp_state_t *m, unsigned version);
int rp_unpack_state(const rp_frame_t *f, rp_state_t *m, unsigned version);
int rp_pack_command(rp_frame_t *f, const rp_command_t *m);
int rp_unpack_command(const rp_frame_t *f, rp_command_t *m);
int rp_pack_heartbeat(rp_frame_t *f, const rp_heartbeat_t *m);
int rp_unpack_heartbeat(const rp_frame_t *f, rp_heartbeat_t *m);
int rp_pack_estop(rp_frame_t *f, const rp_estop_t *m);
int rp_unpack_estop(const rp_frame_t *f, rp_estop_t *m);
int rp_pack_ack(rp_frame_t *f, const rp_ack_t *m);
int rp_unpack_ack(const rp_frame_t *f, rp_ack_t *m);
int rp_pack_nack(rp_frame_t *f, const rp_nack_t *m);
int rp_unpack_nack(const rp_frame_t *f, rp_nack_t *m);
int rp_pack_config(rp_frame_t *f, const rp_config_t *m);
int rp_unpack_config(const rp_frame_t *f, rp_config_t *m);

/* Little-endian helpers, also used by tests. */
void rp_put_u16(uint8_t *p, uint16_t v);
void rp_put_u32(uint8_t *p, uint32_t v);
void rp_put_u64(uint8_t *p, uint64_t v);
void rp_put_f32(uint8_t *p, float v);
uint16_t rp_get_u16(const uint8_t *p);
uint32_t rp_get_u32(const uint8_t *p);
uint64_t rp_get_u64(const uint8_t *p);
float rp_get_f32(const uint8_t *p);

#endif /* RESRT_PROTO_H */
