// EdgepruneModel.swift: opens the model edgeprune built for an iOS device profile. Copied into the app by
// `edgeprune integrate ios` (from edgeprune's targets/ios/); rewritten on every run.
//
// The models sit in the app bundle under Models/<device>/ (add Edgeprune/Models to the target as a folder
// reference): manifest.json plus the model files. The manifest says which runtime each file is for and the
// tensors it takes and gives; this opens the first preferred runtime the app links and has a file for.
//
//   let model = try EdgepruneModel.open()
//   let scores = try model.run(pixels)   // [Float] laid out as model.input.shape: the first output
//   let all = try model.runAll(pixels)   // [[Float]]: every output, in model.outputs' order
import Foundation
#if canImport(ExecuTorch)
import ExecuTorch
#endif
#if canImport(TensorFlowLite)
import TensorFlowLite
#endif
#if canImport(onnxruntime_objc)
import onnxruntime_objc
#endif

public struct EdgepruneTensorSpec: Decodable {
    public let name: String
    public let shape: [Int]
    public let dtype: String
    public let scale: Float?
    public let zero_point: Int?
    /// Outputs only: the output's place in what the model's forward returns ('output', a dict key, an index).
    public let key: String?

    public var elements: Int { shape.reduce(1, *) }

    func quantize(_ x: [Float]) -> Data {
        Data(x.map { UInt8(bitPattern: Int8(clamping: Int(($0 / scale!).rounded()) + zero_point!)) })
    }

    func dequantize(_ q: Data) -> [Float] {
        q.map { scale! * Float(Int(Int8(bitPattern: $0)) - zero_point!) }
    }
}

public struct EdgepruneArtifact: Decodable {
    public let path: String
    public let target: String
    public let sha256: String
    public let inputs: [EdgepruneTensorSpec]
    public let outputs: [EdgepruneTensorSpec]
}

public struct EdgepruneManifest: Decodable {
    public struct Device: Decodable { public let name: String; public let platform: String }
    public let schema_version: Int
    public let device: Device
    public let artifacts: [EdgepruneArtifact]
}

public enum EdgepruneError: Error {
    case noModel(String)
    case badInput(String)
    case badOutput(String)
}

public final class EdgepruneModel {
    public let manifest: EdgepruneManifest
    public let artifact: EdgepruneArtifact
    public var input: EdgepruneTensorSpec { artifact.inputs[0] }
    public var output: EdgepruneTensorSpec { artifact.outputs[0] }
    /// Every output, in the manifest's order (the order the model's forward returns them).
    public var outputs: [EdgepruneTensorSpec] { artifact.outputs }
    private let runFn: ([Float]) throws -> [[Float]]

    /// Targets this build of the app can run, in edgeprune's registry order.
    public static var linkedTargets: [String] {
        var out: [String] = []
        #if canImport(ExecuTorch)
        out.append("executorch")
        #endif
        #if canImport(TensorFlowLite)
        out.append("tflite")
        #endif
        #if canImport(onnxruntime_objc)
        out.append("onnx")
        #endif
        return out
    }

    /// Opens `device`'s model (nil: the only, or first, folder under Models/) with the first of `preferred`.
    public static func open(device: String? = nil, preferred: [String] = linkedTargets,
                            bundle: Bundle = .main) throws -> EdgepruneModel {
        guard let models = bundle.url(forResource: "Models", withExtension: nil) else {
            throw EdgepruneError.noModel("the app bundle has no Models folder; add Edgeprune/Models as a folder reference")
        }
        let folders = try FileManager.default.contentsOfDirectory(atPath: models.path).sorted()
        guard let name = device ?? folders.first else { throw EdgepruneError.noModel("Models/ is empty") }
        let folder = models.appendingPathComponent(name)
        let data = try Data(contentsOf: folder.appendingPathComponent("manifest.json"))
        let manifest = try JSONDecoder().decode(EdgepruneManifest.self, from: data)
        for target in preferred {
            guard let entry = manifest.artifacts.first(where: { $0.target == target }) else { continue }
            let file = folder.appendingPathComponent(entry.path)
            guard FileManager.default.fileExists(atPath: file.path) else { continue }
            return EdgepruneModel(manifest, entry, try runner(target, file, entry))
        }
        throw EdgepruneError.noModel("Models/\(name) has no file for \(preferred); linked runtimes: \(linkedTargets)")
    }

    private init(_ manifest: EdgepruneManifest, _ artifact: EdgepruneArtifact,
                 _ runFn: @escaping ([Float]) throws -> [[Float]]) {
        self.manifest = manifest
        self.artifact = artifact
        self.runFn = runFn
    }

    /// One inference: float input laid out as `input.shape` in; every output in `outputs`' order as floats out
    /// (int8 outputs dequantised with their own scale and zero point).
    public func runAll(_ x: [Float]) throws -> [[Float]] {
        guard x.count == input.elements else {
            throw EdgepruneError.badInput("input has \(x.count) values; \(input.name) takes \(input.shape)")
        }
        let out = try runFn(x)
        guard out.count == outputs.count else {
            throw EdgepruneError.badOutput("\(artifact.path) gave \(out.count) outputs; the manifest lists "
                                           + "\(outputs.count)")
        }
        return out
    }

    /// One inference: the first output (of a model with one output, the output).
    public func run(_ x: [Float]) throws -> [Float] {
        try runAll(x)[0]
    }

    /// Floats from an output's raw bytes: dequantised when the manifest gives it a scale, else read as float32.
    private static func floats(_ bytes: Data, _ spec: EdgepruneTensorSpec) -> [Float] {
        if spec.scale != nil { return spec.dequantize(bytes) }
        return bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    private static func runner(_ target: String, _ file: URL,
                               _ entry: EdgepruneArtifact) throws -> ([Float]) throws -> [[Float]] {
        let input = entry.inputs[0], outputs = entry.outputs
        switch target {
        #if canImport(ExecuTorch)
        case "executorch":
            let module = Module(filePath: file.path)
            try module.load("forward")
            return { x in
                // forward returns the outputs in the model's flattening order, which is the manifest's order
                let values: [Value] = try module.forward(Tensor<Float>(x, shape: input.shape))
                guard values.count == outputs.count else {
                    throw EdgepruneError.badOutput("\(entry.path) returned \(values.count) outputs; the manifest "
                                                   + "lists \(outputs.count)")
                }
                return try outputs.indices.map { i -> [Float] in
                    guard let result: Tensor<Float> = values[i].tensor() else {
                        throw EdgepruneError.badOutput("\(entry.path) output \(outputs[i].name) is not float32")
                    }
                    return result.scalars()
                }
            }
        #endif
        #if canImport(TensorFlowLite)
        case "tflite":
            let interpreter = try Interpreter(modelPath: file.path)
            try interpreter.allocateTensors()
            // The file's own output order need not be the model's (the manifest's): find each output by its name.
            let names = try (0..<interpreter.outputTensorCount).map { try interpreter.output(at: $0).name }
            let indices = try outputs.map { spec -> Int in
                guard let index = names.firstIndex(of: spec.name) else {
                    throw EdgepruneError.badOutput("\(entry.path) has no output tensor \(spec.name) (it has \(names))")
                }
                return index
            }
            return { x in
                let bytes = input.scale != nil ? input.quantize(x) : x.withUnsafeBufferPointer { Data(buffer: $0) }
                try interpreter.copy(bytes, toInputAt: 0)
                try interpreter.invoke()
                return try outputs.indices.map { i -> [Float] in
                    EdgepruneModel.floats(try interpreter.output(at: indices[i]).data, outputs[i])
                }
            }
        #endif
        #if canImport(onnxruntime_objc)
        case "onnx":
            let env = try ORTEnv(loggingLevel: .warning)
            let session = try ORTSession(env: env, modelPath: file.path, sessionOptions: nil)
            return { x in
                let data = NSMutableData(bytes: x, length: x.count * MemoryLayout<Float>.size)
                let tensor = try ORTValue(tensorData: data, elementType: .float,
                                          shape: input.shape.map { NSNumber(value: $0) })
                let values = try session.run(withInputs: [input.name: tensor],
                                             outputNames: Set(outputs.map { $0.name }),
                                             runOptions: nil)
                // a dictionary by output name: read back in the manifest's order
                return try outputs.map { spec -> [Float] in
                    guard let value = values[spec.name] else {
                        throw EdgepruneError.badOutput("\(entry.path) gave no output \(spec.name)")
                    }
                    return EdgepruneModel.floats(try value.tensorData() as Data, spec)
                }
            }
        #endif
        default:
            throw EdgepruneError.noModel("this app does not link the \(target) runtime")
        }
    }
}
