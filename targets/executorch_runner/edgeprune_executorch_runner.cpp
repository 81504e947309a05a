// edgeprune_executorch_runner: measure one ExecuTorch program (.pte) on the machine it runs on, without Python or
// torch. It is the native twin of edgeprune/runners/remote_measure.py and prints the same result fields:
//
//   edgeprune_executorch_runner --artifact model.pte --inputs inputs.npy --outputs outputs.npy \
//       --warmup 10 --runs 50 --threads 4 > result.json
//
// inputs.npy holds float32 rows (N, ...); row i is fed as a batch-1 input and the first output of each inference is
// written, as float32, to outputs.npy (N, ...). Then `warmup` untimed and `runs` timed inferences of row 0 give the
// latency statistics (p50 and p90 interpolated as numpy.percentile does). One JSON line goes to stdout; errors are
// one line on stderr and exit status 1 (bad arguments: 2).
//
// Built against the ExecuTorch shared libraries the executorch wheel ships (Module API, XNNPACK backend, optimized
// and quantized kernels, threadpool): see CMakeLists.txt beside this file.

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor_ptr.h>
#include <executorch/extension/tensor/tensor_ptr_maker.h>
#include <executorch/runtime/core/portable_type/half.h>

#include <sys/stat.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef EDGEPRUNE_EXECUTORCH_VERSION
#define EDGEPRUNE_EXECUTORCH_VERSION "unknown"
#endif
#define EDGEPRUNE_RUNNER_VERSION "1"

// The wheel ships no threadpool.h; these two entry points of libexecutorch_threadpool.so set the thread count.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
  size_t get_thread_count() const;
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace {

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::extension::Module;

struct Failure : std::runtime_error {
  int code;
  Failure(const std::string& what, int exit_code = 1) : std::runtime_error(what), code(exit_code) {}
};

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// ------------------------------------------------------------------------------------------------ .npy files

Array read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Failure("cannot open inputs '" + path + "'");
  char magic[8];
  in.read(magic, 8);
  if (!in || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Failure("'" + path + "' is not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char len[2];
    in.read(reinterpret_cast<char*>(len), 2);
    header_len = len[0] | (len[1] << 8);
  } else {
    unsigned char len[4];
    in.read(reinterpret_cast<char*>(len), 4);
    header_len = len[0] | (len[1] << 8) | (len[2] << 16) | (uint32_t(len[3]) << 24);
  }
  std::string header(header_len, '\0');
  in.read(&header[0], header_len);
  if (header.find("'descr': '<f4'") == std::string::npos)
    throw Failure("'" + path + "' must hold little-endian float32 (descr '<f4'); header: " + header);
  if (header.find("'fortran_order': False") == std::string::npos)
    throw Failure("'" + path + "' must be C-ordered");
  size_t open = header.find('(', header.find("'shape'"));
  size_t close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) throw Failure("'" + path + "' has no shape");
  Array out;
  std::stringstream dims(header.substr(open + 1, close - open - 1));
  std::string item;
  while (std::getline(dims, item, ',')) {
    if (item.find_first_not_of(" ") == std::string::npos) continue;
    out.shape.push_back(std::stoll(item));
  }
  if (out.shape.empty()) throw Failure("'" + path + "' holds a scalar; expected rows (N, ...)");
  size_t count = 1;
  for (int64_t d : out.shape) count *= static_cast<size_t>(d);
  out.data.resize(count);
  in.read(reinterpret_cast<char*>(out.data.data()), static_cast<std::streamsize>(count * sizeof(float)));
  if (static_cast<size_t>(in.gcount()) != count * sizeof(float)) throw Failure("'" + path + "' is truncated");
  return out;
}

void write_npy(const std::string& path, const Array& array) {
  std::string shape = "(";
  for (size_t i = 0; i < array.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(array.shape[i]);
  shape += array.shape.size() == 1 ? ",)" : ")";  // a 1-tuple keeps its comma: "(3,)"
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::string tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::binary);
  if (!out) throw Failure("cannot write outputs '" + path + "'");
  out.write("\x93NUMPY\x01\x00", 8);
  const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xFF),
                                static_cast<unsigned char>(header.size() >> 8)};
  out.write(reinterpret_cast<const char*>(len), 2);
  out << header;
  out.write(reinterpret_cast<const char*>(array.data.data()),
            static_cast<std::streamsize>(array.data.size() * sizeof(float)));
  out.close();
  if (!out || std::rename(tmp.c_str(), path.c_str()) != 0) throw Failure("cannot write outputs '" + path + "'");
}

// ------------------------------------------------------------------------------------------------ the machine

long status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::strtol(line.c_str() + key.size(), nullptr, 10);
  }
  return -1;
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string number(double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", value);
  return buf;
}

double percentile(std::vector<double> samples, double q) {  // numpy's default (linear) method
  std::sort(samples.begin(), samples.end());
  double pos = q / 100.0 * static_cast<double>(samples.size() - 1);
  size_t lo = static_cast<size_t>(pos);
  size_t hi = std::min(lo + 1, samples.size() - 1);
  return samples[lo] + (samples[hi] - samples[lo]) * (pos - static_cast<double>(lo));
}

// ------------------------------------------------------------------------------------------------ the program

struct Args {
  std::string artifact, inputs, outputs;
  int warmup = 10, runs = 50, threads = 1;
};

Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    if (key == "--help" || key == "-h") {
      std::printf("usage: edgeprune_executorch_runner --artifact M.pte --inputs IN.npy --outputs OUT.npy "
                  "[--warmup 10] [--runs 50] [--threads 1]\n");
      std::exit(0);
    }
    if (i + 1 >= argc) throw Failure("option " + key + " needs a value", 2);
    std::string value = argv[++i];
    try {
      if (key == "--artifact") args.artifact = value;
      else if (key == "--inputs") args.inputs = value;
      else if (key == "--outputs") args.outputs = value;
      else if (key == "--warmup") args.warmup = std::stoi(value);
      else if (key == "--runs") args.runs = std::stoi(value);
      else if (key == "--threads") args.threads = std::stoi(value);
      else throw Failure("unknown option " + key + "; known: --artifact --inputs --outputs --warmup --runs --threads", 2);
    } catch (const std::invalid_argument&) {
      throw Failure("option " + key + " needs a number, not '" + value + "'", 2);
    }
  }
  if (args.artifact.empty() || args.inputs.empty() || args.outputs.empty())
    throw Failure("--artifact, --inputs and --outputs are required", 2);
  if (args.runs < 1 || args.warmup < 0 || args.threads < 1)
    throw Failure("need --runs >= 1, --warmup >= 0 and --threads >= 1", 2);
  return args;
}

std::string error_name(executorch::runtime::Error error) {
  return "ExecuTorch error 0x" + [](int v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%x", v);
    return std::string(buf);
  }(static_cast<int>(error));
}

class Session {
 public:
  Session(const std::string& path) : module_(path, Module::LoadMode::File) {
    auto error = module_.load_forward();
    if (error != executorch::runtime::Error::Ok)
      throw Failure("cannot load method 'forward' of '" + path + "': " + error_name(error) +
                    " (an XNNPACK program on an unsupported CPU fails here)");
    auto meta = module_.method_meta("forward");
    if (!meta.ok()) throw Failure("cannot read the metadata of 'forward': " + error_name(meta.error()));
    auto input = meta->input_tensor_meta(0);
    if (!input.ok()) throw Failure("the program's first input is not a tensor");
    input_type_ = input->scalar_type();
    for (auto d : input->sizes()) input_sizes_.push_back(d);
    if (input_type_ != ScalarType::Float && input_type_ != ScalarType::Half)
      throw Failure("the program's input is neither float32 nor float16");
  }

  size_t row_elements() const {
    size_t n = 1;
    for (auto d : input_sizes_) n *= static_cast<size_t>(d);
    return n;
  }

  // One inference of `row` (row_elements() floats); returns the first output as float32 and its shape.
  std::vector<float> run(const float* row, std::vector<int64_t>* shape) {
    executorch::extension::TensorPtr tensor;
    std::vector<executorch::aten::Half> half;
    if (input_type_ == ScalarType::Half) {
      half.assign(row, row + row_elements());
      tensor = executorch::extension::from_blob(half.data(), input_sizes_, ScalarType::Half);
    } else {
      tensor = executorch::extension::from_blob(const_cast<float*>(row), input_sizes_, ScalarType::Float);
    }
    auto result = module_.forward(tensor);
    if (!result.ok()) throw Failure("inference failed: " + error_name(result.error()));
    if (result->empty() || !(*result)[0].isTensor()) throw Failure("the program's first output is not a tensor");
    const auto& out = (*result)[0].toTensor();
    if (shape) {
      shape->clear();
      for (auto d : out.sizes()) shape->push_back(d);
    }
    std::vector<float> values(static_cast<size_t>(out.numel()));
    if (out.scalar_type() == ScalarType::Float) {
      std::memcpy(values.data(), out.const_data_ptr<float>(), values.size() * sizeof(float));
    } else if (out.scalar_type() == ScalarType::Half) {
      const auto* h = out.const_data_ptr<executorch::aten::Half>();
      for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(h[i]);
    } else {
      throw Failure("the program's first output is neither float32 nor float16");
    }
    return values;
  }

 private:
  Module module_;
  ScalarType input_type_ = ScalarType::Float;
  std::vector<SizesType> input_sizes_;
};

int measure(const Args& args) {
  Array inputs = read_npy(args.inputs);
  const long rss_before_kb = status_kb("VmRSS");
  if (!executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(
          static_cast<uint32_t>(args.threads)))
    throw Failure("cannot set the thread pool to " + std::to_string(args.threads) + " threads");
  Session session(args.artifact);
  const size_t row = session.row_elements();
  const size_t rows = static_cast<size_t>(inputs.shape[0]);
  if (rows == 0 || inputs.data.size() != rows * row)
    throw Failure("inputs of " + std::to_string(inputs.data.size()) + " values are not rows of the program's input (" +
                  std::to_string(row) + " values each)");

  Array outputs;
  std::vector<int64_t> out_shape;
  for (size_t i = 0; i < rows; ++i) {
    std::vector<float> y = session.run(inputs.data.data() + i * row, &out_shape);
    outputs.data.insert(outputs.data.end(), y.begin(), y.end());
  }
  outputs.shape.push_back(static_cast<int64_t>(rows));  // row i's output, its leading batch dimension dropped
  for (size_t d = (out_shape.size() > 1 && out_shape[0] == 1) ? 1 : 0; d < out_shape.size(); ++d)
    outputs.shape.push_back(out_shape[d]);
  if (out_shape.size() == 1 && out_shape[0] == 1) outputs.shape.resize(1);

  for (int i = 0; i < args.warmup; ++i) session.run(inputs.data.data(), nullptr);
  std::vector<double> samples_ms;
  for (int i = 0; i < args.runs; ++i) {
    auto start = std::chrono::steady_clock::now();
    session.run(inputs.data.data(), nullptr);
    samples_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  const long rss_after_kb = status_kb("VmRSS");
  const long peak_kb = status_kb("VmHWM");
  write_npy(args.outputs, outputs);

  double mean = 0;
  for (double s : samples_ms) mean += s;
  mean /= static_cast<double>(samples_ms.size());
  struct stat st {};
  stat(args.artifact.c_str(), &st);
  struct utsname uts {};
  uname(&uts);
  const char* null = "null";
  std::string json = "{\"schema_version\": 1";
  json += ", \"latency_p50_ms\": " + number(percentile(samples_ms, 50));
  json += ", \"latency_p90_ms\": " + number(percentile(samples_ms, 90));
  json += ", \"latency_mean_ms\": " + number(mean);
  json += ", \"runs\": " + std::to_string(args.runs);
  json += ", \"warmup_runs\": " + std::to_string(args.warmup);
  json += ", \"threads\": " + std::to_string(args.threads);
  json += ", \"size_bytes\": " + std::to_string(static_cast<long long>(st.st_size));
  json += ", \"rss_growth_mb\": " +
          (rss_before_kb < 0 || rss_after_kb < 0 ? std::string(null) : number((rss_after_kb - rss_before_kb) / 1e3));
  json += ", \"peak_rss_mb\": " + (peak_kb < 0 ? std::string(null) : number(peak_kb / 1e3));
  json += ", \"runner\": \"edgeprune_executorch_runner (ExecuTorch Module API, native)\"";
  json += ", \"runtime_versions\": {\"executorch\": " + json_string(EDGEPRUNE_EXECUTORCH_VERSION) +
          ", \"edgeprune_executorch_runner\": " + json_string(EDGEPRUNE_RUNNER_VERSION) + "}";
  json += ", \"machine\": {\"system\": " + json_string(uts.sysname) + ", \"machine\": " + json_string(uts.machine) +
          ", \"python\": null}}";
  std::printf("%s\n", json.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return measure(parse_args(argc, argv));
  } catch (const Failure& failure) {
    std::fprintf(stderr, "edgeprune_executorch_runner: %s\n", failure.what());
    return failure.code;
  } catch (const std::exception& exc) {
    std::fprintf(stderr, "edgeprune_executorch_runner: %s\n", exc.what());
    return 1;
  }
}
