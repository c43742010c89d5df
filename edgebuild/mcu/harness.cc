// edgebuild's firmware test harness: the build's own model files, exactly as emitted, run by TFLM on
// every input, with semihosting file I/O (QEMU's working folder):
//   inputs.bin   the inputs, raw, one input tensor after another (read)
//   outputs.bin  the first output tensor of each inference, raw (written)
//   ticks.bin    SysTick ticks of each Invoke() as a little-endian uint64 (written): with QEMU's
//                -icount shift=0 one instruction takes 1 ns, so ticks x (1e9 / clock) = instructions
//   result.bin   uint32 words: magic, inferences, arena used, arena size, peak stack, stack size
// The model's names come from the compiler's -D flags (edgebuild sets them from the emitted header):
// EDGEBUILD_MODEL_HEADER, EDGEBUILD_OPS_HEADER, EDGEBUILD_MODEL_DATA, EDGEBUILD_ARENA_BYTES,
// EDGEBUILD_RESOLVER, EDGEBUILD_REGISTER_OPS. Exit codes: 0 done, 2 TFLM refused the model, 4 file I/O, 5 the arena is too small.
#include <stdint.h>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include EDGEBUILD_MODEL_HEADER
#include EDGEBUILD_OPS_HEADER

extern "C" {
void edgebuild_write(const char* text);
extern volatile uint32_t edgebuild_systick_wraps;
extern uint32_t __stack_limit[], __stack_top[];
}

namespace {

constexpr uint32_t kReload = 0x00FFFFFFu;  // SysTick is a 24-bit down counter
volatile uint32_t& SYST_CSR = *reinterpret_cast<volatile uint32_t*>(0xE000E010u);
volatile uint32_t& SYST_RVR = *reinterpret_cast<volatile uint32_t*>(0xE000E014u);
volatile uint32_t& SYST_CVR = *reinterpret_cast<volatile uint32_t*>(0xE000E018u);
volatile uint32_t& ICSR = *reinterpret_cast<volatile uint32_t*>(0xE000ED04u);
constexpr uint32_t kPaint = 0xED6EB11Du;

alignas(16) uint8_t g_arena[EDGEBUILD_ARENA_BYTES];

uint32_t semihost(uint32_t op, const void* arg) {
  register uint32_t r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

int32_t open_file(const char* name, uint32_t mode) {  // mode 1 "rb", 5 "wb"
  uint32_t length = 0;
  while (name[length] != 0) ++length;
  const uint32_t block[3] = {reinterpret_cast<uint32_t>(name), mode, length};
  return static_cast<int32_t>(semihost(0x01u, block));
}

// SYS_READ / SYS_WRITE answer the number of bytes NOT transferred.
uint32_t read_bytes(int32_t handle, void* data, uint32_t size) {
  const uint32_t block[3] = {static_cast<uint32_t>(handle), reinterpret_cast<uint32_t>(data), size};
  return size - semihost(0x06u, block);
}

bool write_bytes(int32_t handle, const void* data, uint32_t size) {
  const uint32_t block[3] = {static_cast<uint32_t>(handle), reinterpret_cast<uint32_t>(data), size};
  return semihost(0x05u, block) == 0;
}

void close_file(int32_t handle) {
  const uint32_t block[1] = {static_cast<uint32_t>(handle)};
  semihost(0x02u, block);
}

// Ticks since the counter was started, wraps included; a wrap whose interrupt is still pending counts.
uint64_t ticks_now() {
  for (;;) {
    uint32_t wraps = edgebuild_systick_wraps;
    const uint32_t value = SYST_CVR;
    const bool pending = (ICSR & (1u << 26)) != 0;
    if (wraps != edgebuild_systick_wraps) continue;
    if (pending && value > kReload / 2) ++wraps;
    return static_cast<uint64_t>(wraps) * (kReload + 1u) + (kReload - value);
  }
}

int fail(const char* message, int code) {
  edgebuild_write("edgebuild: ");
  edgebuild_write(message);
  edgebuild_write("\n");
  return code;
}

}  // namespace

int main() {
  // Paint the stack below this frame, to measure the deepest use after the run.
  uint32_t* sp;
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  for (volatile uint32_t* p = __stack_limit; p < sp - 16; ++p) *p = kPaint;

  static EDGEBUILD_RESOLVER resolver;
  if (EDGEBUILD_REGISTER_OPS(resolver) != kTfLiteOk) return fail("registering the model's ops failed", 2);
  static tflite::MicroInterpreter interpreter(tflite::GetModel(EDGEBUILD_MODEL_DATA), resolver, g_arena,
                                              EDGEBUILD_ARENA_BYTES);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    return fail("AllocateTensors() failed: the tensor arena is too small for this TFLM build", 5);
  }
  TfLiteTensor* input = interpreter.input(0);
  TfLiteTensor* output = interpreter.output(0);

  const int32_t inputs = open_file("inputs.bin", 1);
  const int32_t outputs = open_file("outputs.bin", 5);
  const int32_t ticks = open_file("ticks.bin", 5);
  if (inputs < 0 || outputs < 0 || ticks < 0) return fail("cannot open inputs.bin, outputs.bin or ticks.bin", 4);

  SYST_RVR = kReload;
  SYST_CVR = 0;
  SYST_CSR = 7u;  // processor clock, interrupt on each wrap, enabled
  while (SYST_CVR == 0) {
  }  // the counter reads 0 until its first tick loads it
  ICSR = 1u << 25;  // PENDSTCLR: a start is no wrap
  edgebuild_systick_wraps = 0;
  uint32_t count = 0;
  while (read_bytes(inputs, input->data.raw, input->bytes) == input->bytes) {
    const uint64_t start = ticks_now();
    if (interpreter.Invoke() != kTfLiteOk) return fail("Invoke() failed", 2);
    const uint64_t spent = ticks_now() - start;
    if (!write_bytes(outputs, output->data.raw, output->bytes) || !write_bytes(ticks, &spent, sizeof spent)) {
      return fail("writing outputs.bin or ticks.bin failed", 4);
    }
    ++count;
  }
  close_file(inputs);
  close_file(outputs);
  close_file(ticks);

  const uint32_t* deepest = __stack_limit;
  while (deepest < sp && *deepest == kPaint) ++deepest;
  const uint32_t stack_bytes = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(__stack_top) -
                                                     reinterpret_cast<uintptr_t>(__stack_limit));
  const uint32_t result[6] = {0xEDB0F1A5u,
                              count,
                              static_cast<uint32_t>(interpreter.arena_used_bytes()),
                              static_cast<uint32_t>(EDGEBUILD_ARENA_BYTES),
                              static_cast<uint32_t>(reinterpret_cast<uintptr_t>(__stack_top) -
                                                    reinterpret_cast<uintptr_t>(deepest)),
                              stack_bytes};
  const int32_t handle = open_file("result.bin", 5);
  if (handle < 0 || !write_bytes(handle, result, sizeof result)) return fail("writing result.bin failed", 4);
  close_file(handle);
  return 0;
}
