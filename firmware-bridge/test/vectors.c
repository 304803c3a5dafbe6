/*
 * The reference frames of docs/serial-protocol.md, "Test vectors".
 *
 *   vectors             one JSON object per line: {"name", "version", "hex"} (wire bytes); the
 *                       TypeScript codec tests encode the same messages and compare every byte
 *   vectors --markdown  the page's vector section, which `make -C firmware-bridge docs` splices
 *                       into the page and test/hw-serial-codec.test.ts checks is current
 */
#include <stdio.h>
#include <string.h>

#include "../src/resrt_proto.h"

static int markdown = 0;

#define LINE_WIDTH 100

/* Prints hex tokens after a prefix, wrapping lines at LINE_WIDTH with a hanging indent. */
static void print_wrapped(const char *prefix, const char *const *tokens, size_t count) {
  size_t col, i, indent = strlen(prefix);
  fputs(prefix, stdout);
  col = indent;
  for (i = 0; i < count; i++) {
    size_t w = strlen(tokens[i]);
    if (i > 0 && col + 1 + w > LINE_WIDTH) {
      printf("\n%*s", (int)indent, "");
      col = indent;
    } else if (i > 0) {
      putchar(' ');
      col++;
    }
    fputs(tokens[i], stdout);
    col += w;
  }
  putchar('\n');
}

static void emit(const char *name, const char *description, rp_frame_t *f, uint8_t version,
                 uint8_t type, uint16_t seq, uint8_t flags) {
  static char hexbuf[2 * RP_MAX_WIRE + 8][3];
  const char *tokens[2 * RP_MAX_WIRE + 8];
  uint8_t raw[RP_MAX_FRAME], wire[RP_MAX_WIRE];
  size_t n, w, i, t = 0;
  f->version = version;
  f->type = type;
  f->seq = seq;
  f->flags = flags;
  n = rp_frame_serialize(f, raw);
  w = rp_wire_from_raw(raw, n, wire, sizeof wire);
  if (!markdown) {
    printf("{\"name\":\"%s\",\"version\":%u,\"hex\":\"", name, (unsigned)version);
    for (i = 0; i < w; i++) printf("%02x", wire[i]);
    printf("\"}\n");
    return;
  }
  printf("`%s` (version %u): %s:\n\n```\n", name, (unsigned)version, description);
  /* raw: header | payload | CRC */
  for (i = 0; i < n; i++) {
    if (i == RP_HEADER_SIZE || i == n - RP_CRC_SIZE) tokens[t++] = "|";
    if (i == RP_HEADER_SIZE && n - RP_CRC_SIZE == RP_HEADER_SIZE) tokens[t++] = "|";
    snprintf(hexbuf[t], sizeof hexbuf[t], "%02x", raw[i]);
    tokens[t] = hexbuf[t];
    t++;
  }
  print_wrapped("raw : ", tokens, t);
  for (i = 0, t = 0; i < w; i++, t++) {
    snprintf(hexbuf[t], sizeof hexbuf[t], "%02x", wire[i]);
    tokens[t] = hexbuf[t];
  }
  print_wrapped("wire: ", tokens, t);
  printf("```\n\n");
}

int main(int argc, char **argv) {
  rp_frame_t f;
  unsigned i;
  markdown = argc > 1 && strcmp(argv[1], "--markdown") == 0;
  memset(&f, 0, sizeof f);
  {
    rp_command_t m;
    m.validity_ms = 100;
    m.action_dim = 2;
    m.action[0] = 0.5f;
    m.action[1] = -0.25f;
    rp_pack_command(&f, &m);
    emit("command", "COMMAND, seq 0x1234, validity 100 ms, action [0.5, -0.25]", &f, 1,
         RP_COMMAND, 0x1234, 0);
  }
  {
    rp_hello_t m = {2, {1, 2}};
    rp_pack_hello(&f, &m);
    emit("hello", "HELLO, seq 0, versions [1, 2]", &f, 1, RP_HELLO, 0, 0);
  }
  {
    rp_capabilities_t m;
    memset(&m, 0, sizeof m);
    m.protocol_version = 1;
    m.action_dim = 2;
    m.joint_count = 2;
    m.sensor_count = 1;
    m.rate_hz = 500;
    m.watchdog_ms = 200;
    strcpy(m.name, "arm");
    strcpy(m.fw_version, "0.1.0");
    m.low[0] = -0.9f;
    m.low[1] = -0.5f;
    m.high[0] = 0.9f;
    m.high[1] = 1.0f;
    m.safe[0] = 0.0f;
    m.safe[1] = -0.25f;
    rp_pack_capabilities(&f, &m);
    emit("capabilities",
         "CAPABILITIES, seq 1: v1, D=2, J=2, S=1, 500 Hz, watchdog 200 ms, name \"arm\", firmware "
         "\"0.1.0\", low [-0.9, -0.5], high [0.9, 1.0], safe [0, -0.25]",
         &f, 1, RP_CAPABILITIES, 1, 0);
  }
  {
    rp_state_t m;
    memset(&m, 0, sizeof m);
    m.device_time_us = 1234567;
    m.status = RP_ST_NEGOTIATED | RP_ST_CLAMPED;
    m.last_cmd_seq = 0x1234;
    m.joint_count = 2;
    m.sensor_count = 1;
    m.action_dim = 2;
    m.positions[0] = 0.5f;
    m.positions[1] = -0.5f;
    m.velocities[0] = 1.0f;
    m.velocities[1] = 0.0f;
    m.efforts[0] = 0.125f;
    m.efforts[1] = -2.0f;
    m.sensors[0] = 3.0f;
    m.outputs[0] = 0.9f;
    m.outputs[1] = 0.0f;
    rp_pack_state(&f, &m, 1);
    emit("state",
         "STATE, seq 2: t = 1 234 567 µs, status NEGOTIATED|CLAMPED (0x0024), last seq 0x1234, "
         "J=2, S=1, D=2, positions [0.5, -0.5], velocities [1, 0], efforts [0.125, -2], sensors "
         "[3], outputs [0.9, 0]",
         &f, 1, RP_STATE, 2, 0);
  }
  {
    rp_heartbeat_t m = {1000000u, 0u};
    rp_pack_heartbeat(&f, &m);
    emit("heartbeat", "HEARTBEAT, seq 7, time 1 000 000 µs, echo 0", &f, 1, RP_HEARTBEAT, 7, 0);
  }
  {
    rp_estop_t m;
    m.reason_len = 6;
    strcpy(m.reason, "button");
    rp_pack_estop(&f, &m);
    emit("estop", "ESTOP, seq 8, ACK_REQ, reason \"button\"", &f, 1, RP_ESTOP, 8, RP_FLAG_ACK_REQ);
  }
  f.len = 0;
  emit("reset", "RESET, seq 9, ACK_REQ", &f, 1, RP_RESET, 9, RP_FLAG_ACK_REQ);
  {
    rp_ack_t m = {RP_RESET, 9};
    rp_pack_ack(&f, &m);
    emit("ack", "ACK of RESET seq 9 (device seq 3)", &f, 1, RP_ACK, 3, 0);
  }
  {
    rp_nack_t m = {RP_COMMAND, 0x1235, RP_E_WRONG_DIM, 2};
    rp_pack_nack(&f, &m);
    emit("nack", "NACK of COMMAND seq 0x1235, WRONG_DIM, detail 2 (device seq 4)", &f, 1, RP_NACK,
         4, 0);
  }
  {
    rp_config_t m;
    m.watchdog_ms = 250;
    m.action_dim = 2;
    m.low[0] = -0.5f;
    m.low[1] = -0.5f;
    m.high[0] = 0.5f;
    m.high[1] = 0.75f;
    rp_pack_config(&f, &m);
    emit("config",
         "CONFIG, seq 10, ACK_REQ, watchdog 250 ms, low [-0.5, -0.5], high [0.5, 0.75]", &f, 1,
         RP_CONFIG, 10, RP_FLAG_ACK_REQ);
  }
#if RP_MAX_VERSION >= 2
  {
    rp_capabilities_t m;
    memset(&m, 0, sizeof m);
    m.protocol_version = 2;
    m.action_dim = 3;
    m.joint_count = 0;
    m.sensor_count = 19;
    m.rate_hz = 25;
    m.watchdog_ms = 1000;
    m.watchdog_mode = RP_WATCHDOG_HOLD;
    strcpy(m.name, "push");
    strcpy(m.fw_version, "2.0");
    for (i = 0; i < 3; i++) {
      m.low[i] = -1.0f;
      m.high[i] = 1.0f;
      m.safe[i] = 0.0f;
    }
    rp_pack_capabilities(&f, &m);
    emit("capabilities_v2",
         "CAPABILITIES, seq 1: v2, D=3, J=0, S=19, 25 Hz, watchdog 1000 ms, watchdog mode hold, "
         "name \"push\", firmware \"2.0\", low [-1, -1, -1], high [1, 1, 1], safe [0, 0, 0]",
         &f, 2, RP_CAPABILITIES, 1, 0);
  }
  {
    rp_state_t m;
    memset(&m, 0, sizeof m);
    m.device_time_us = 5000000;
    m.status = RP_ST_NEGOTIATED | RP_ST_SAFE_HOLD | RP_ST_WATCHDOG_HOLD;
    m.last_cmd_seq = 77;
    m.joint_count = 0;
    m.sensor_count = 20;
    m.action_dim = 3;
    for (i = 0; i < 20; i++) m.sensors[i] = (float)i * 0.5f;
    rp_pack_state(&f, &m, 2);
    emit("state_v2",
         "STATE, seq 40: t = 5 000 000 µs, status NEGOTIATED|SAFE_HOLD|WATCHDOG_HOLD (0x0068), "
         "last seq 77, J=0, S=20, D=3, sensors [0, 0.5, 1, ..., 9.5], outputs [0, 0, 0]",
         &f, 2, RP_STATE, 40, 0);
  }
  f.len = 0;
  emit("hold", "HOLD, seq 11, ACK_REQ", &f, 2, RP_HOLD, 11, RP_FLAG_ACK_REQ);
  {
    rp_command_t m;
    m.validity_ms = 20;
    m.action_dim = 64;
    for (i = 0; i < 64; i++) m.action[i] = (float)((int)i - 32) / 64.0f;
    rp_pack_command(&f, &m);
    emit("command_v2_64",
         "COMMAND, seq 300, validity 20 ms, D=64, action[i] = (i - 32) / 64 (a frame over 256 "
         "bytes: COBS needs two blocks of 254)",
         &f, 2, RP_COMMAND, 300, 0);
  }
#endif
  return 0;
}
