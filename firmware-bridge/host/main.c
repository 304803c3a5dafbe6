/*
 * Host build of the bridge: the firmware core behind a pseudo-terminal, driving a simulated
 * plant, so the TypeScript side can be tested over a real tty without hardware.
 *
 * Prints exactly one line "PTY <path>" on stdout, then serves until SIGTERM/SIGINT.
 *
 * --manual-clock is for conformance tests: the device clock stands still and the pty is read
 * only when a line "step <us> <nbytes>" arrives on stdin. The host then reads exactly <nbytes>
 * from the pty (what the test wrote), feeds them, advances the clock by <us> while ticking at
 * every deadline the core asks for, and answers "ok <now_us> <bytes written>" on stdout. The
 * firmware core is the same; only its clock and its reads are driven from outside.
 */
#define _XOPEN_SOURCE 600
#define _DEFAULT_SOURCE

#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../src/bridge.h"

#define PLANT_TAU_S 0.02

typedef struct {
  int fd;
  int log;
  unsigned joints;
  unsigned sensors;
  int manual_clock;
  uint64_t manual_now_us;
  uint64_t written; /* bytes written to the pty, for the manual-clock answer */
  uint64_t t0_us;
  uint64_t last_us;
  double target[RP_MAX_JOINTS];
  double pos[RP_MAX_JOINTS];
  double vel[RP_MAX_JOINTS];
  uint32_t write_drops;
} host_t;

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t hal_now(void *ctx) {
  host_t *h = (host_t *)ctx;
  return h->manual_clock ? h->manual_now_us : mono_us() - h->t0_us;
}

/* Exact first-order step toward the target over the elapsed time. */
static void plant_advance(host_t *h) {
  uint64_t now = hal_now(h);
  double dt = (double)(now - h->last_us) * 1e-6;
  unsigned i;
  if (dt <= 0) return;
  for (i = 0; i < h->joints; i++) {
    double a = exp(-dt / PLANT_TAU_S);
    double next = h->target[i] + (h->pos[i] - h->target[i]) * a;
    h->vel[i] = (next - h->pos[i]) / dt;
    h->pos[i] = next;
  }
  h->last_us = now;
}

static void hal_write(void *ctx, const uint8_t *data, size_t len) {
  host_t *h = (host_t *)ctx;
  size_t off = 0;
  int tries = 0;
  while (off < len) {
    ssize_t w = write(h->fd, data + off, len - off);
    if (w > 0) {
      off += (size_t)w;
      h->written += (uint64_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      /* Nobody is reading the tty: a frame not yet begun is dropped whole (the host sees a gap
       * in the sequence), rather than stall the control loop. One already begun is finished
       * when the reader drains within 50 ms: a torn frame would reach the host as a CRC error
       * that no real device with a blocking UART driver sends. */
      struct pollfd pfd;
      if (off == 0 && ++tries >= 3) {
        h->write_drops++;
        return;
      }
      if (off == 0) continue;
      pfd.fd = h->fd;
      pfd.events = POLLOUT;
      pfd.revents = 0;
      if (poll(&pfd, 1, 50) > 0) continue;
    }
    h->write_drops++;
    return;
  }
}

static void hal_apply(void *ctx, const float *outputs, uint8_t dim) {
  host_t *h = (host_t *)ctx;
  unsigned i;
  plant_advance(h);
  for (i = 0; i < dim && i < h->joints; i++) h->target[i] = outputs[i];
}

/* The safe action as a comma-separated list of dim values in [-1, 1]. */
static int parse_safe(const char *value, unsigned dim, float *safe) {
  const char *p = value;
  unsigned i;
  if (value == NULL) {
    fprintf(stderr, "resrt-bridge-host: --safe needs a value\n");
    return -1;
  }
  for (i = 0; i < dim; i++) {
    char *end = NULL;
    float v;
    errno = 0;
    v = strtof(p, &end);
    if (errno != 0 || end == p || !(v >= -1.0f && v <= 1.0f) ||
        (i + 1 < dim ? *end != ',' : *end != '\0')) {
      fprintf(stderr,
              "resrt-bridge-host: --safe must list %u comma-separated values in [-1, 1] (one per "
              "joint), got '%s'\n",
              dim, value);
      return -1;
    }
    safe[i] = v;
    p = end + 1;
  }
  return 0;
}

static void hal_read(void *ctx, rp_state_t *st) {
  host_t *h = (host_t *)ctx;
  unsigned i;
  double sum = 0;
  plant_advance(h);
  for (i = 0; i < h->joints; i++) {
    st->positions[i] = (float)h->pos[i];
    st->velocities[i] = (float)h->vel[i];
    st->efforts[i] = (float)(2.0 * (h->target[i] - h->pos[i]));
    sum += h->pos[i];
  }
  /* Fake sensors: the mean position, the plant clock in seconds, then each one's own index. */
  for (i = 0; i < h->sensors; i++) {
    st->sensors[i] = i == 0 ? (float)(sum / h->joints)
                            : (i == 1 ? (float)((double)h->last_us * 1e-6) : (float)i);
  }
}

/* Reads exactly n bytes from the pty (the test wrote them before asking); -1 after 5 s. */
static int read_exactly(host_t *h, rb_bridge_t *b, unsigned long n) {
  uint8_t buf[512];
  while (n > 0) {
    fd_set rd;
    struct timeval tv = {5, 0};
    ssize_t got;
    FD_ZERO(&rd);
    FD_SET(h->fd, &rd);
    if (select(h->fd + 1, &rd, NULL, NULL, &tv) <= 0) return -1;
    got = read(h->fd, buf, n < sizeof buf ? n : sizeof buf);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (got <= 0) return -1;
    rb_feed(b, buf, (size_t)got);
    n -= (unsigned long)got;
  }
  return 0;
}

/* One "step <us> <nbytes>" of the manual clock; returns -1 on a malformed line or a short read. */
static int manual_step(host_t *h, rb_bridge_t *b, const char *line) {
  unsigned long long us = 0;
  unsigned long nbytes = 0;
  uint64_t target;
  if (sscanf(line, "step %llu %lu", &us, &nbytes) != 2) {
    fprintf(stderr, "resrt-bridge-host: expected 'step <us> <nbytes>' on stdin, got '%s'\n", line);
    return -1;
  }
  h->written = 0;
  if (read_exactly(h, b, nbytes) != 0) {
    fprintf(stderr, "resrt-bridge-host: fewer than %lu bytes arrived on the pty within 5 s\n",
            nbytes);
    return -1;
  }
  rb_tick(b);
  target = h->manual_now_us + (uint64_t)us;
  /* A firmware loop wakes at every deadline the core names: jump from one to the next. */
  for (;;) {
    uint64_t d = rb_next_deadline_us(b);
    if (d > target) break;
    if (d > h->manual_now_us) h->manual_now_us = d;
    rb_tick(b);
  }
  h->manual_now_us = target;
  rb_tick(b);
  printf("ok %llu %llu\n", (unsigned long long)h->manual_now_us, (unsigned long long)h->written);
  fflush(stdout);
  return 0;
}

static int parse_uint(const char *flag, const char *value, unsigned long lo, unsigned long hi,
                      unsigned long *out) {
  char *end = NULL;
  unsigned long v;
  if (value == NULL) {
    fprintf(stderr, "resrt-bridge-host: %s needs a value\n", flag);
    return -1;
  }
  errno = 0;
  v = strtoul(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "resrt-bridge-host: %s must be an integer in [%lu, %lu], got '%s'\n", flag,
            lo, hi, value);
    return -1;
  }
  *out = v;
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: resrt-bridge-host [--joints N] [--sensors N] [--rate HZ] [--watchdog-ms MS]\n"
          "                         [--watchdog-mode latch|hold] [--limit L] [--safe v1,v2,...]\n"
          "                         [--corrupt-every N] [--manual-clock] [--log]\n");
}

int main(int argc, char **argv) {
  unsigned long joints = 3, sensors = 2, rate = 100, watchdog = 200, corrupt = 0, limit_pct = 90;
  int log_enabled = 0, manual_clock = 0, hold_mode = 0, i;
  const char *safe_arg = NULL;
  float safe[RP_MAX_DIM];
  host_t host;
  rb_hal_t hal;
  rb_settings_t settings;
  static rb_bridge_t bridge;
  int master, slave;
  char *slave_name;
  struct termios tio;
  struct sigaction sa;
  uint32_t last_nacks = 0, last_trips = 0;

  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    int r = 0;
    if (strcmp(a, "--joints") == 0) {
      r = parse_uint(a, v, 1, RP_MAX_JOINTS, &joints);
      i++;
    } else if (strcmp(a, "--sensors") == 0) {
      r = parse_uint(a, v, 0, RP_MAX_SENSORS, &sensors);
      i++;
    } else if (strcmp(a, "--safe") == 0) {
      safe_arg = v;
      r = v == NULL ? (fprintf(stderr, "resrt-bridge-host: --safe needs a value\n"), -1) : 0;
      i++;
    } else if (strcmp(a, "--watchdog-mode") == 0) {
      if (v != NULL && strcmp(v, "latch") == 0) {
        hold_mode = 0;
      } else if (v != NULL && strcmp(v, "hold") == 0) {
        hold_mode = 1;
      } else {
        fprintf(stderr, "resrt-bridge-host: --watchdog-mode must be 'latch' or 'hold', got '%s'\n",
                v ? v : "");
        r = -1;
      }
      i++;
    } else if (strcmp(a, "--manual-clock") == 0) {
      manual_clock = 1;
    } else if (strcmp(a, "--rate") == 0) {
      r = parse_uint(a, v, 1, 10000, &rate);
      i++;
    } else if (strcmp(a, "--watchdog-ms") == 0) {
      r = parse_uint(a, v, RB_WATCHDOG_MIN_MS, RB_WATCHDOG_MAX_MS, &watchdog);
      i++;
    } else if (strcmp(a, "--corrupt-every") == 0) {
      r = parse_uint(a, v, 0, 1000000, &corrupt);
      i++;
    } else if (strcmp(a, "--limit") == 0) {
      /* Percent of full scale, so the flag stays an integer. */
      r = parse_uint(a, v, 1, 100, &limit_pct);
      i++;
    } else if (strcmp(a, "--log") == 0) {
      log_enabled = 1;
    } else {
      fprintf(stderr, "resrt-bridge-host: unknown argument '%s'\n", a);
      usage();
      return 2;
    }
    if (r != 0) return 2;
  }
  for (i = 0; i < (int)joints; i++) safe[i] = 0.0f;
  if (safe_arg != NULL && parse_safe(safe_arg, (unsigned)joints, safe) != 0) return 2;

  master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
    perror("resrt-bridge-host: posix_openpt");
    return 1;
  }
  slave_name = ptsname(master);
  if (slave_name == NULL) {
    perror("resrt-bridge-host: ptsname");
    return 1;
  }
  /* Holding the slave open keeps the master from reporting hangup while no host is attached. */
  slave = open(slave_name, O_RDWR | O_NOCTTY);
  if (slave < 0 || tcgetattr(slave, &tio) != 0) {
    perror("resrt-bridge-host: open slave");
    return 1;
  }
  cfmakeraw(&tio);
  cfsetispeed(&tio, B1000000);
  cfsetospeed(&tio, B1000000);
  if (tcsetattr(slave, TCSANOW, &tio) != 0) {
    perror("resrt-bridge-host: tcsetattr");
    return 1;
  }
  fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);

  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  memset(&host, 0, sizeof host);
  host.fd = master;
  host.log = log_enabled;
  host.joints = (unsigned)joints;
  host.sensors = (unsigned)sensors;
  host.manual_clock = manual_clock;
  /* The manual clock starts at 1 s, so "within the last watchdog_ms" never reaches before 0. */
  host.manual_now_us = 1000000u;
  host.t0_us = mono_us();

  memset(&settings, 0, sizeof settings);
  settings.name = "resrt-bridge-host";
  settings.fw_version = "0.1.0";
  settings.action_dim = (uint8_t)joints;
  settings.joint_count = (uint8_t)joints;
  settings.sensor_count = (uint8_t)sensors;
  settings.rate_hz = (uint16_t)rate;
  settings.watchdog_ms = (uint16_t)watchdog;
  settings.watchdog_mode = hold_mode ? RP_WATCHDOG_HOLD : RP_WATCHDOG_LATCH;
  for (i = 0; i < (int)joints; i++) {
    settings.low[i] = -(float)limit_pct / 100.0f;
    settings.high[i] = (float)limit_pct / 100.0f;
    settings.safe[i] = safe[i];
  }
  hal.ctx = &host;
  hal.write_bytes = hal_write;
  hal.now_us = hal_now;
  hal.apply_outputs = hal_apply;
  hal.read_sensors = hal_read;
  if (rb_init(&bridge, &hal, &settings) != 0) {
    fprintf(stderr,
            "resrt-bridge-host: invalid settings (joints %lu, sensors %lu, rate %lu, watchdog "
            "%lu, safe action outside --limit?)\n",
            joints, sensors, rate, watchdog);
    return 2;
  }
  rb_set_corrupt_every(&bridge, (uint32_t)corrupt);

  printf("PTY %s\n", slave_name);
  fflush(stdout);
  if (log_enabled) {
    fprintf(stderr,
            "resrt-bridge-host: %lu joints, %lu sensors, %lu Hz, watchdog %lu ms (%s), "
            "corrupt-every %lu%s\n",
            joints, sensors, rate, watchdog, hold_mode ? "hold" : "latch", corrupt,
            manual_clock ? ", manual clock" : "");
  }

  while (manual_clock && !stop_requested) {
    char line[128];
    if (fgets(line, sizeof line, stdin) == NULL) break; /* the test closed stdin: done */
    line[strcspn(line, "\r\n")] = '\0';
    if (manual_step(&host, &bridge, line) != 0) {
      close(slave);
      close(master);
      return 1;
    }
  }

  while (!manual_clock && !stop_requested) {
    uint8_t buf[512];
    fd_set rd;
    struct timeval tv;
    uint64_t now = hal_now(&host), deadline = rb_next_deadline_us(&bridge), wait_us;
    ssize_t n;
    wait_us = deadline > now ? deadline - now : 0;
    if (wait_us > 100000u) wait_us = 100000u;
    tv.tv_sec = 0;
    tv.tv_usec = (suseconds_t)wait_us;
    FD_ZERO(&rd);
    FD_SET(master, &rd);
    if (select(master + 1, &rd, NULL, NULL, &tv) < 0 && errno != EINTR) {
      perror("resrt-bridge-host: select");
      break;
    }
    if (stop_requested) break;
    if (FD_ISSET(master, &rd)) {
      n = read(master, buf, sizeof buf);
      if (n > 0) {
        rb_feed(&bridge, buf, (size_t)n);
      } else if (n < 0 && errno != EAGAIN && errno != EINTR && errno != EIO) {
        perror("resrt-bridge-host: read");
        break;
      }
    }
    rb_tick(&bridge);
    if (log_enabled && (bridge.counters.nacks_sent != last_nacks ||
                        bridge.counters.watchdog_trips != last_trips)) {
      fprintf(stderr,
              "resrt-bridge-host: rx %u tx %u nacks %u crc-errors %u applied %u watchdog %u "
              "status 0x%04x\n",
              bridge.counters.rx_frames, bridge.counters.tx_frames, bridge.counters.nacks_sent,
              bridge.decoder.crc_errors, bridge.counters.commands_applied,
              bridge.counters.watchdog_trips, bridge.status);
      last_nacks = bridge.counters.nacks_sent;
      last_trips = bridge.counters.watchdog_trips;
    }
  }
  if (log_enabled) {
    fprintf(stderr, "resrt-bridge-host: exiting (rx %u tx %u applied %u write drops %u)\n",
            bridge.counters.rx_frames, bridge.counters.tx_frames,
            bridge.counters.commands_applied, host.write_drops);
  }
  close(slave);
  close(master);
  return 0;
}
