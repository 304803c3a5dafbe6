/*
 * Prints reference frames, one JSON object per line: {"name": ..., "hex": wire bytes}.
 * The TypeScript codec tests encode the same messages and must produce identical bytes;
 * docs/serial-protocol.md quotes these frames.
 */
#include <stdio.h>
#include <string.h>

#include "../src/resrt_proto.h"

static void emit(const char *name, rp_frame_t *f, uint8_t type, uint16_t seq, uint8_t flags) {
  uint8_t wire[RP_MAX_WIRE];
  size_t n, i;
  f->version = RP_PROTOCOL_VERSION;
  f->type = type;
  f->seq = seq;
  f->flags = flags;
  n = rp_frame_encode(f, wire, sizeof wire);
  printf("{\"name\":\"%s\",\"hex\":\"", name);
  for (i = 0; i < n; i++) printf("%02x", wire[i]);
  printf("\"}\n");
}

int main(void) {
  rp_frame_t f;
  {
    rp_hello_t m = {2, {1, 2}};
    rp_pack_hello(&f, &m);
    emit("hello", &f, RP_HELLO, 0, 0);
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
    emit("capabilities", &f, RP_CAPABILITIES, 1, 0);
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
    rp_pack_state(&f, &m);
    emit("state", &f, RP_STATE, 2, 0);
  }
  {
    rp_command_t m;
    m.validity_ms = 100;
    m.action_dim = 2;
    m.action[0] = 0.5f;
    m.action[1] = -0.25f;
    rp_pack_command(&f, &m);
    emit("command", &f, RP_COMMAND, 0x1234, 0);
  }
  {
    rp_heartbeat_t m = {1000000u, 0u};
    rp_pack_heartbeat(&f, &m);
    emit("heartbeat", &f, RP_HEARTBEAT, 7, 0);
  }
  {
    rp_estop_t m;
    m.reason_len = 6;
    strcpy(m.reason, "button");
    rp_pack_estop(&f, &m);
    emit("estop", &f, RP_ESTOP, 8, RP_FLAG_ACK_REQ);
  }
  f.len = 0;
  emit("reset", &f, RP_RESET, 9, RP_FLAG_ACK_REQ);
  {
    rp_ack_t m = {RP_RESET, 9};
    rp_pack_ack(&f, &m);
    emit("ack", &f, RP_ACK, 3, 0);
  }
  {
    rp_nack_t m = {RP_COMMAND, 0x1235, RP_E_WRONG_DIM, 2};
    rp_pack_nack(&f, &m);
    emit("nack", &f, RP_NACK, 4, 0);
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
    emit("config", &f, RP_CONFIG, 10, RP_FLAG_ACK_REQ);
  }
  return 0;
}
