/*
 * resrt bridge on a real board: Serial at 1 Mbaud, one PWM output per action dimension.
 * The protocol core is the portable C in ../../src; copy (or symlink) resrt_proto.{h,c} and
 * bridge.{h,c} next to this sketch, as the Arduino IDE only compiles files in the sketch folder.
 *
 * On AVR boards (Uno, Nano: 2 KB of RAM) resrt_proto.h builds protocol version 1 only (256-byte
 * buffers); resrt's host negotiates it. Boards with more RAM serve version 2 (up to 64 joints).
 *
 * Example wiring: 3 hobby servos/ESCs driven by analogWrite on PWM pins; positions are read back
 * from potentiometers on A0..A2. Adapt kPwmPins/kAdcPins and the scaling to your hardware.
 */
extern "C" {
#include "bridge.h"
}

static const uint8_t kDim = 3;
static const uint8_t kPwmPins[kDim] = {3, 5, 6};
static const uint8_t kAdcPins[kDim] = {A0, A1, A2};
static const uint16_t kRateHz = 200;
static const uint16_t kWatchdogMs = 100;

static rb_bridge_t bridge;
static float lastPos[kDim];
static uint32_t lastReadUs = 0;

static void halWrite(void *, const uint8_t *data, size_t len) {
  // Serial.write blocks when its TX buffer is full; at 1 Mbaud a STATE frame takes ~1 ms.
  Serial.write(data, len);
}

static uint64_t halNow(void *) {
  // micros() wraps every ~71 minutes; widen it to 64 bits so the bridge never sees time go back.
  static uint32_t last = 0;
  static uint64_t high = 0;
  uint32_t now = micros();
  if (now < last) high += (uint64_t)1 << 32;
  last = now;
  return high | now;
}

static void halApply(void *, const float *outputs, uint8_t dim) {
  // Normalized [-1, 1] -> 8-bit PWM duty. The bridge has already clamped and validated it.
  for (uint8_t i = 0; i < dim && i < kDim; i++) {
    int duty = (int)((outputs[i] + 1.0f) * 127.5f);
    analogWrite(kPwmPins[i], constrain(duty, 0, 255));
  }
}

static void halRead(void *, rp_state_t *st) {
  uint32_t now = micros();
  float dt = (now - lastReadUs) * 1e-6f;
  for (uint8_t i = 0; i < kDim; i++) {
    float pos = analogRead(kAdcPins[i]) / 511.5f - 1.0f;
    st->positions[i] = pos;
    st->velocities[i] = dt > 0 ? (pos - lastPos[i]) / dt : 0.0f;
    st->efforts[i] = 0.0f;  // no current sensing in this example
    lastPos[i] = pos;
  }
  st->sensors[0] = analogRead(A3) / 1023.0f;
  lastReadUs = now;
}

void setup() {
  Serial.begin(1000000);
  for (uint8_t i = 0; i < kDim; i++) pinMode(kPwmPins[i], OUTPUT);
  rb_hal_t hal = {nullptr, halWrite, halNow, halApply, halRead};
  rb_settings_t s;
  memset(&s, 0, sizeof s);
  s.name = "arduino-3pwm";
  s.fw_version = "0.1.0";
  s.action_dim = kDim;
  s.joint_count = kDim;
  s.sensor_count = 1;
  s.rate_hz = kRateHz;
  s.watchdog_ms = kWatchdogMs;
  s.watchdog_mode = RP_WATCHDOG_LATCH;  // a fault a person clears (RP_WATCHDOG_HOLD: resume on the next command)
  for (uint8_t i = 0; i < kDim; i++) {
    s.low[i] = -1.0f;
    s.high[i] = 1.0f;
    s.safe[i] = 0.0f;  // mid-scale PWM: servos centred / ESCs stopped
  }
  if (rb_init(&bridge, &hal, &s) != 0) {
    // Invalid compile-time settings: refuse to drive anything.
    pinMode(LED_BUILTIN, OUTPUT);
    for (;;) {
      digitalWrite(LED_BUILTIN, !digitalRead(LED_BUILTIN));
      delay(100);
    }
  }
}

void loop() {
  uint8_t buf[64];
  int n = Serial.available();
  if (n > 0) {
    if (n > (int)sizeof buf) n = sizeof buf;
    n = Serial.readBytes(buf, n);
    rb_feed(&bridge, buf, (size_t)n);
  }
  rb_tick(&bridge);
}
