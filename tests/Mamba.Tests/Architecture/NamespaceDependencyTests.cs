using System.Reflection;
using System.Reflection.Emit;
using Mamba.Model;

namespace Mamba.Tests.Architecture;

/// <summary>
/// The model orchestrates backend ops without knowing which backend runs them: no type of <c>Mamba.Model</c> may use a
/// type of <c>Mamba.Compute.Cuda</c>, <c>Mamba.Native</c> or the CPU backend's classes. Checked on the compiled
/// assembly (signatures, fields, base types and every member or type token in method bodies, lambdas included), so
/// a reference cannot hide in a using alias or a fully qualified name.
/// </summary>
public class NamespaceDependencyTests
{
    private static readonly string[] ForbiddenNamespaces = ["Mamba.Compute.Cuda", "Mamba.Native", "Mamba.Compute.Cpu"];

    [Test]
    public void ModelNamespaceUsesNoConcreteBackend()
    {
        var assembly = typeof(MambaForCausalLM).Assembly;
        var modelTypes = assembly.GetTypes().Where(t => t.Namespace == "Mamba.Model").ToArray();
        Assert.That(modelTypes, Has.Length.GreaterThan(5), "the Mamba.Model types were not found");
        var violations = new SortedSet<string>();
        foreach (var type in modelTypes)
            foreach (var (used, where) in UsedTypes(type))
                if (IsForbidden(used)) violations.Add($"{type.FullName}: {where} uses {used.FullName}");
        Assert.That(violations, Is.Empty, string.Join(Environment.NewLine, violations));
    }

    [Test]
    public void TheCheckSeesABackendReference()
    {
        // The walker must find a reference when one exists (else the test above could never fail).
        var found = UsedTypes(typeof(Probe)).Select(u => u.Type).Where(IsForbidden).ToArray();
        Assert.That(found.Select(t => t.Name), Does.Contain("CpuBackend").And.Contain("CudaTensor"));
    }

    private static class Probe
    {
        // Only the IL of these bodies matters; they never run.
        public static object ViaMethodBody() => new Mamba.Compute.Cpu.CpuBackend();
        public static bool ViaTypeTest(object o) => o is Mamba.Compute.Cuda.CudaTensor;
    }

    private static bool IsForbidden(Type type)
    {
        var t = type;
        while (t.HasElementType) t = t.GetElementType()!;
        if (t.IsGenericType && t.GetGenericArguments().Any(IsForbidden)) return true;
        return t.Namespace is { } ns && ForbiddenNamespaces.Any(f => ns == f || ns.StartsWith(f + ".", StringComparison.Ordinal));
    }

    private const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static IEnumerable<(Type Type, string Where)> UsedTypes(Type type)
    {
        if (type.BaseType is { } b) yield return (b, "base type");
        foreach (var i in type.GetInterfaces()) yield return (i, "interface");
        foreach (var f in type.GetFields(All)) yield return (f.FieldType, $"field {f.Name}");
        foreach (var p in type.GetProperties(All)) yield return (p.PropertyType, $"property {p.Name}");
        foreach (var m in type.GetMethods(All).Cast<MethodBase>().Concat(type.GetConstructors(All)))
        {
            if (m is MethodInfo mi) yield return (mi.ReturnType, $"{m.Name} return type");
            foreach (var p in m.GetParameters()) yield return (p.ParameterType, $"{m.Name} parameter {p.Name}");
            var body = m.GetMethodBody();
            if (body is null) continue;
            foreach (var local in body.LocalVariables) yield return (local.LocalType, $"{m.Name} local");
            foreach (var used in BodyTokens(m, body)) yield return (used, $"{m.Name} body");
        }
        foreach (var nested in type.GetNestedTypes(All))
            foreach (var used in UsedTypes(nested)) yield return used;
    }

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    /// <summary>The declaring or referenced type of every member/type token in an IL body.</summary>
    private static IEnumerable<Type> BodyTokens(MethodBase method, MethodBody body)
    {
        var il = body.GetILAsByteArray() ?? [];
        var module = method.Module;
        var typeArgs = method.DeclaringType is { IsGenericType: true } dt ? dt.GetGenericArguments() : null;
        var methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (int pos = 0; pos < il.Length;)
        {
            short value = il[pos++];
            if (value == 0xFE) value = unchecked((short)(0xFE00 | il[pos++]));
            var op = OpCodesByValue[value];
            int size = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, pos),
                _ => 4,
            };
            if (op.OperandType is OperandType.InlineMethod or OperandType.InlineField or OperandType.InlineType or OperandType.InlineTok)
            {
                int token = BitConverter.ToInt32(il, pos);
                Type? used = null;
                try
                {
                    var member = module.ResolveMember(token, typeArgs, methodArgs);
                    used = member as Type ?? member?.DeclaringType;
                    if (member is FieldInfo field && IsForbidden(field.FieldType)) used = field.FieldType;
                }
                catch (ArgumentException) { /* a token of another module's generic context: not a backend type */ }
                if (used is not null) yield return used;
            }
            pos += size;
        }
    }
}
